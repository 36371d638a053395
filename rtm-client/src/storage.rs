//! Metadata and lock calls: the reference's `rtm.storage` and `rtm.lock`
//! (`docs/protocol.md` §5.9, §5.10).
//!
//! Metadata is durable: a channel's set (one per channel name and type) and a user's set stay
//! until removed. Every write can check revisions (compare-and-set) and can be guarded by a
//! lock. Locks are per channel and held by one user; a holder whose connection is lost keeps
//! its locks for their ttl.

use rtm_proto::{
    ChannelType, LockOp, LockRequest, MetadataOp, MetadataTarget, MetadataWrite, Request, Response,
    validate,
};
pub use rtm_proto::{
    LockDetail, LockEvent, LockEventType, MetadataItem, MetadataOptions, StorageData, StorageEvent,
    StorageEventType, StorageType, StoredItem,
};

use crate::{RtmClient, RtmError, check, unexpected};

/// The metadata calls of a client, from [`RtmClient::storage`].
#[derive(Clone, Debug)]
pub struct Storage {
    client: RtmClient,
}

/// The lock calls of a client, from [`RtmClient::lock`].
#[derive(Clone, Debug)]
pub struct Lock {
    client: RtmClient,
}

/// The answer to a channel metadata write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelMetadataResponse {
    /// The channel.
    pub channel_name: String,
    /// Its type.
    pub channel_type: ChannelType,
    /// Items in the set after the write.
    pub total_count: usize,
    /// The set's major revision after the write (0: the set was removed).
    pub major_revision: i64,
    /// Server time.
    pub timestamp: u64,
}

/// The answer to [`Storage::set_channel_metadata`].
pub type SetChannelMetadataResponse = ChannelMetadataResponse;
/// The answer to [`Storage::update_channel_metadata`].
pub type UpdateChannelMetadataResponse = ChannelMetadataResponse;
/// The answer to [`Storage::remove_channel_metadata`].
pub type RemoveChannelMetadataResponse = ChannelMetadataResponse;

/// The answer to a user metadata write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserMetadataResponse {
    /// The user.
    pub user_id: String,
    /// Items in the set after the write.
    pub total_count: usize,
    /// The set's major revision after the write (0: the set was removed).
    pub major_revision: i64,
    /// Server time.
    pub timestamp: u64,
}

/// The answer to [`Storage::set_user_metadata`].
pub type SetUserMetadataResponse = UserMetadataResponse;
/// The answer to [`Storage::update_user_metadata`].
pub type UpdateUserMetadataResponse = UserMetadataResponse;
/// The answer to [`Storage::remove_user_metadata`].
pub type RemoveUserMetadataResponse = UserMetadataResponse;

/// The answer to [`Storage::get_channel_metadata`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetChannelMetadataResponse {
    /// The channel.
    pub channel_name: String,
    /// Its type.
    pub channel_type: ChannelType,
    /// How many items the set has.
    pub total_count: usize,
    /// The set's major revision (0: there is no set).
    pub major_revision: i64,
    /// The items, in the order their keys were first set.
    pub metadata: Vec<StoredItem>,
    /// Server time.
    pub timestamp: u64,
}

/// The answer to [`Storage::get_user_metadata`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetUserMetadataResponse {
    /// The user.
    pub user_id: String,
    /// How many items the set has.
    pub total_count: usize,
    /// The set's major revision (0: there is no set).
    pub major_revision: i64,
    /// The items, in the order their keys were first set.
    pub metadata: Vec<StoredItem>,
    /// Server time.
    pub timestamp: u64,
}

/// The answer to [`Storage::subscribe_user_metadata`] and
/// [`Storage::unsubscribe_user_metadata`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserMetadataSubscriptionResponse {
    /// The user.
    pub user_id: String,
    /// Server time.
    pub timestamp: u64,
}

/// The reference's `SubscribeUserMetaResponse`.
pub type SubscribeUserMetaResponse = UserMetadataSubscriptionResponse;
/// The reference's `UnsubscribeUserMetaResponse`.
pub type UnsubscribeUserMetaResponse = UserMetadataSubscriptionResponse;

/// Options of [`Storage::remove_channel_metadata`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoveChannelMetadataOptions {
    /// The items to remove (values are ignored); empty for the whole set.
    pub data: Vec<MetadataItem>,
    /// Revision check, lock and records.
    pub options: MetadataOptions,
}

/// Options of [`Storage::set_user_metadata`] and [`Storage::update_user_metadata`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetOrUpdateUserMetadataOptions {
    /// Whose metadata; `None` for this user's.
    pub user_id: Option<String>,
    /// Revision check and records (`lock_name` is for channel metadata only).
    pub options: MetadataOptions,
}

/// Options of [`Storage::remove_user_metadata`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoveUserMetadataOptions {
    /// Whose metadata; `None` for this user's.
    pub user_id: Option<String>,
    /// The items to remove (values are ignored); empty for the whole set.
    pub data: Vec<MetadataItem>,
    /// Revision check and records.
    pub options: MetadataOptions,
}

/// Options of [`Storage::get_user_metadata`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetUserMetadataOptions {
    /// Whose metadata; `None` for this user's.
    pub user_id: Option<String>,
}

/// Options of [`Lock::set_lock`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetLockOptions {
    /// Seconds the lock stays held after its holder's connection is lost: 10–300 (clamped),
    /// `None` for 10.
    pub ttl: Option<u32>,
}

/// Options of [`Lock::acquire_lock`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcquireLockOptions {
    /// When another user holds the lock, wait until this client gets it (default false: fail
    /// with `LOCK_ACQUIRE_FAILED`). The wait ends with the connection.
    pub retry: bool,
}

/// The answer to a lock call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockResponse {
    /// The channel.
    pub channel_name: String,
    /// Its type.
    pub channel_type: ChannelType,
    /// The lock.
    pub lock_name: String,
    /// Server time.
    pub timestamp: u64,
}

/// The answer to [`Lock::set_lock`].
pub type SetLockResponse = LockResponse;
/// The answer to [`Lock::remove_lock`].
pub type RemoveLockResponse = LockResponse;
/// The answer to [`Lock::acquire_lock`].
pub type AcquireLockResponse = LockResponse;
/// The answer to [`Lock::release_lock`].
pub type ReleaseLockResponse = LockResponse;
/// The answer to [`Lock::revoke_lock`].
pub type RevokeLockResponse = LockResponse;

/// The answer to [`Lock::get_locks`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetLocksResponse {
    /// The channel.
    pub channel_name: String,
    /// Its type.
    pub channel_type: ChannelType,
    /// How many locks the channel has.
    pub total_locks: usize,
    /// The locks, in creation order.
    pub lock_details: Vec<LockDetail>,
    /// Server time.
    pub timestamp: u64,
}

impl RtmClient {
    /// The metadata calls (the reference's `rtm.storage`).
    pub fn storage(&self) -> Storage {
        Storage {
            client: self.clone(),
        }
    }

    /// The lock calls (the reference's `rtm.lock`).
    pub fn lock(&self) -> Lock {
        Lock {
            client: self.clone(),
        }
    }
}

fn channel(channel_type: ChannelType, channel_name: &str) -> MetadataTarget {
    MetadataTarget::Channel {
        channel_type,
        channel: channel_name.to_owned(),
    }
}

impl Storage {
    fn user_or_self(&self, user_id: Option<String>) -> String {
        user_id.unwrap_or_else(|| self.client.inner.user_id.clone())
    }

    /// Sends a write; returns the set's item count and major revision after it.
    async fn write(
        &self,
        op: MetadataOp,
        target: MetadataTarget,
        items: Vec<MetadataItem>,
        options: MetadataOptions,
    ) -> Result<(usize, i64, u64), RtmError> {
        let write = MetadataWrite {
            op,
            target,
            items,
            options,
        };
        let operation = write.operation();
        check(validate::metadata_write(&write), operation)?;
        match self
            .client
            .request(operation, Request::WriteMetadata(write))
            .await?
        {
            Response::MetadataWritten {
                total_count,
                major_revision,
                timestamp,
            } => Ok((total_count as usize, major_revision, timestamp)),
            other => Err(unexpected(operation, &other)),
        }
    }

    async fn channel_write(
        &self,
        op: MetadataOp,
        channel_name: &str,
        channel_type: ChannelType,
        items: Vec<MetadataItem>,
        options: MetadataOptions,
    ) -> Result<ChannelMetadataResponse, RtmError> {
        let target = channel(channel_type, channel_name);
        let (total_count, major_revision, timestamp) =
            self.write(op, target, items, options).await?;
        Ok(ChannelMetadataResponse {
            channel_name: channel_name.to_owned(),
            channel_type,
            total_count,
            major_revision,
            timestamp,
        })
    }

    async fn user_write(
        &self,
        op: MetadataOp,
        user_id: Option<String>,
        items: Vec<MetadataItem>,
        options: MetadataOptions,
    ) -> Result<UserMetadataResponse, RtmError> {
        let user_id = self.user_or_self(user_id);
        let target = MetadataTarget::User {
            user_id: user_id.clone(),
        };
        let (total_count, major_revision, timestamp) =
            self.write(op, target, items, options).await?;
        Ok(UserMetadataResponse {
            user_id,
            total_count,
            major_revision,
            timestamp,
        })
    }

    /// Sets items of a channel's metadata: new keys are added, existing ones overwritten.
    pub async fn set_channel_metadata(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
        data: Vec<MetadataItem>,
        options: MetadataOptions,
    ) -> Result<SetChannelMetadataResponse, RtmError> {
        self.channel_write(MetadataOp::Set, channel_name, channel_type, data, options)
            .await
    }

    /// Overwrites existing items of a channel's metadata; a missing key fails the call.
    pub async fn update_channel_metadata(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
        data: Vec<MetadataItem>,
        options: MetadataOptions,
    ) -> Result<UpdateChannelMetadataResponse, RtmError> {
        self.channel_write(
            MetadataOp::Update,
            channel_name,
            channel_type,
            data,
            options,
        )
        .await
    }

    /// Removes items of a channel's metadata, or (with no items) the whole set.
    pub async fn remove_channel_metadata(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
        options: RemoveChannelMetadataOptions,
    ) -> Result<RemoveChannelMetadataResponse, RtmError> {
        self.channel_write(
            MetadataOp::Remove,
            channel_name,
            channel_type,
            options.data,
            options.options,
        )
        .await
    }

    /// A channel's metadata.
    pub async fn get_channel_metadata(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
    ) -> Result<GetChannelMetadataResponse, RtmError> {
        let (data, timestamp) = self
            .get("getChannelMetadata", channel(channel_type, channel_name))
            .await?;
        Ok(GetChannelMetadataResponse {
            channel_name: channel_name.to_owned(),
            channel_type,
            total_count: data.items.len(),
            major_revision: data.major_revision,
            metadata: data.items,
            timestamp,
        })
    }

    async fn get(
        &self,
        operation: &'static str,
        target: MetadataTarget,
    ) -> Result<(StorageData, u64), RtmError> {
        match self
            .client
            .request(operation, Request::GetMetadata { target })
            .await?
        {
            Response::Metadata { data, timestamp } => Ok((data, timestamp)),
            other => Err(unexpected(operation, &other)),
        }
    }

    /// Sets items of a user's metadata (this user's unless `options.user_id`).
    pub async fn set_user_metadata(
        &self,
        data: Vec<MetadataItem>,
        options: SetOrUpdateUserMetadataOptions,
    ) -> Result<SetUserMetadataResponse, RtmError> {
        self.user_write(MetadataOp::Set, options.user_id, data, options.options)
            .await
    }

    /// Overwrites existing items of a user's metadata; a missing key fails the call.
    pub async fn update_user_metadata(
        &self,
        data: Vec<MetadataItem>,
        options: SetOrUpdateUserMetadataOptions,
    ) -> Result<UpdateUserMetadataResponse, RtmError> {
        self.user_write(MetadataOp::Update, options.user_id, data, options.options)
            .await
    }

    /// Removes items of a user's metadata, or (with no items) the whole set.
    pub async fn remove_user_metadata(
        &self,
        options: RemoveUserMetadataOptions,
    ) -> Result<RemoveUserMetadataResponse, RtmError> {
        self.user_write(
            MetadataOp::Remove,
            options.user_id,
            options.data,
            options.options,
        )
        .await
    }

    /// A user's metadata (this user's unless `options.user_id`).
    pub async fn get_user_metadata(
        &self,
        options: GetUserMetadataOptions,
    ) -> Result<GetUserMetadataResponse, RtmError> {
        let user_id = self.user_or_self(options.user_id);
        let target = MetadataTarget::User {
            user_id: user_id.clone(),
        };
        let (data, timestamp) = self.get("getUserMetadata", target).await?;
        Ok(GetUserMetadataResponse {
            user_id,
            total_count: data.items.len(),
            major_revision: data.major_revision,
            metadata: data.items,
            timestamp,
        })
    }

    /// Receives the storage events of a user's metadata, starting with a `SNAPSHOT`. Kept
    /// across reconnections.
    pub async fn subscribe_user_metadata(
        &self,
        user_id: &str,
    ) -> Result<SubscribeUserMetaResponse, RtmError> {
        let request = Request::SubscribeUserMetadata {
            user_id: user_id.to_owned(),
        };
        let timestamp = self.done("subscribeUserMetadata", request).await?;
        if let Some(session) = self.client.inner.lock().session.as_mut() {
            session.user_metadata.insert(user_id.to_owned());
        }
        Ok(UserMetadataSubscriptionResponse {
            user_id: user_id.to_owned(),
            timestamp,
        })
    }

    /// Stops receiving the storage events of a user's metadata.
    pub async fn unsubscribe_user_metadata(
        &self,
        user_id: &str,
    ) -> Result<UnsubscribeUserMetaResponse, RtmError> {
        let request = Request::UnsubscribeUserMetadata {
            user_id: user_id.to_owned(),
        };
        let timestamp = self.done("unsubscribeUserMetadata", request).await?;
        if let Some(session) = self.client.inner.lock().session.as_mut() {
            session.user_metadata.remove(user_id);
        }
        Ok(UserMetadataSubscriptionResponse {
            user_id: user_id.to_owned(),
            timestamp,
        })
    }

    async fn done(&self, operation: &'static str, request: Request) -> Result<u64, RtmError> {
        match self.client.request(operation, request).await? {
            Response::Done { timestamp } => Ok(timestamp),
            other => Err(unexpected(operation, &other)),
        }
    }
}

impl Lock {
    async fn call(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
        lock_name: &str,
        op: LockOp,
    ) -> Result<LockResponse, RtmError> {
        let operation = op.operation();
        check(validate::lock_name(lock_name), operation)?;
        // An acquire that waits for the lock waits as long as it takes.
        let wait = matches!(op, LockOp::Acquire { retry: true });
        let request = Request::Lock(LockRequest {
            channel_type,
            channel: channel_name.to_owned(),
            lock_name: lock_name.to_owned(),
            op,
        });
        let answer = if wait {
            self.client.request_within(operation, request, None).await?
        } else {
            self.client.request(operation, request).await?
        };
        match answer {
            Response::Done { timestamp } => Ok(LockResponse {
                channel_name: channel_name.to_owned(),
                channel_type,
                lock_name: lock_name.to_owned(),
                timestamp,
            }),
            other => Err(unexpected(operation, &other)),
        }
    }

    /// Creates a lock in a channel, free, with a ttl (how long it stays held after its
    /// holder's connection is lost).
    pub async fn set_lock(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
        lock_name: &str,
        options: SetLockOptions,
    ) -> Result<SetLockResponse, RtmError> {
        let ttl = options.ttl.unwrap_or(0);
        self.call(channel_name, channel_type, lock_name, LockOp::Set { ttl })
            .await
    }

    /// Deletes a lock (held or not).
    pub async fn remove_lock(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
        lock_name: &str,
    ) -> Result<RemoveLockResponse, RtmError> {
        self.call(channel_name, channel_type, lock_name, LockOp::Remove)
            .await
    }

    /// Takes a lock. Held by another user: fails with `LOCK_ACQUIRE_FAILED`, or with
    /// `retry`, waits until this client gets it.
    pub async fn acquire_lock(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
        lock_name: &str,
        options: AcquireLockOptions,
    ) -> Result<AcquireLockResponse, RtmError> {
        let op = LockOp::Acquire {
            retry: options.retry,
        };
        self.call(channel_name, channel_type, lock_name, op).await
    }

    /// Gives up a lock this user holds.
    pub async fn release_lock(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
        lock_name: &str,
    ) -> Result<ReleaseLockResponse, RtmError> {
        self.call(channel_name, channel_type, lock_name, LockOp::Release)
            .await
    }

    /// Takes a lock away from `owner`, leaving it free.
    pub async fn revoke_lock(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
        lock_name: &str,
        owner: &str,
    ) -> Result<RevokeLockResponse, RtmError> {
        let op = LockOp::Revoke {
            owner: owner.to_owned(),
        };
        self.call(channel_name, channel_type, lock_name, op).await
    }

    /// The locks of a channel.
    pub async fn get_locks(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
    ) -> Result<GetLocksResponse, RtmError> {
        let request = Request::GetLocks {
            channel_type,
            channel: channel_name.to_owned(),
        };
        match self.client.request("getLocks", request).await? {
            Response::Locks { locks, timestamp } => Ok(GetLocksResponse {
                channel_name: channel_name.to_owned(),
                channel_type,
                total_locks: locks.len(),
                lock_details: locks,
                timestamp,
            }),
            other => Err(unexpected("getLocks", &other)),
        }
    }
}
