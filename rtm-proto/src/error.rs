//! Error codes and the errors of the codec.
//!
//! [`ErrorCode`] carries the numbers of the Signaling reference (`-10001` … `-15005`), so that an
//! application migrating from the Signaling SDK can keep matching on the same values. A code this
//! version does not know (sent by a newer server) decodes as [`ErrorCode::Unknown`] instead of
//! failing the frame.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $num:literal => $text:literal, )*) => {
        /// A stable error code, numbered as in the Signaling reference.
        ///
        /// On the wire it is the signed integer ([`ErrorCode::code`]); [`Debug`] and
        /// [`Display`](fmt::Display) print the reference's name, e.g. `CHANNEL_RECEIVER_OFFLINE` for
        /// [`ErrorCode::ChannelReceiverOffline`].
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
            /// A code this version of rtm does not know, kept with its number.
            Unknown(i32),
        }

        impl ErrorCode {
            /// The code's number, as in the reference.
            pub const fn code(self) -> i32 {
                match self {
                    $( Self::$name => $num, )*
                    Self::Unknown(n) => n,
                }
            }

            /// The code with this number; unknown numbers give [`ErrorCode::Unknown`].
            pub const fn from_code(code: i32) -> Self {
                match code {
                    $( $num => Self::$name, )*
                    n => Self::Unknown(n),
                }
            }

            /// The reference's name of the code, without the `RTM_ERROR_` prefix.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Self::$name => $text, )*
                    Self::Unknown(_) => "UNKNOWN",
                }
            }

            /// Every known code, in the reference's order.
            pub const ALL: &'static [Self] = &[ $( Self::$name, )* ];
        }
    };
}

error_codes! {
    /// Success.
    Ok = 0 => "OK",
    /// The client was not initialized.
    NotInitialized = -10001 => "NOT_INITIALIZED",
    /// The client is not logged in (or has been logged out).
    NotLogin = -10002 => "NOT_LOGIN",
    /// The App ID is not valid or not served here.
    InvalidAppId = -10003 => "INVALID_APP_ID",
    /// The event handler is not valid.
    InvalidEventHandler = -10004 => "INVALID_EVENT_HANDLER",
    /// The token is not valid.
    InvalidToken = -10005 => "INVALID_TOKEN",
    /// The user id is empty, too long or has characters outside the allowed set.
    InvalidUserId = -10006 => "INVALID_USER_ID",
    /// The service could not be initialized.
    InitServiceFailed = -10007 => "INIT_SERVICE_FAILED",
    /// The channel name is empty, too long or has characters outside the allowed set.
    InvalidChannelName = -10008 => "INVALID_CHANNEL_NAME",
    /// The token has expired.
    TokenExpired = -10009 => "TOKEN_EXPIRED",
    /// The server has no resources for another login.
    LoginNoServerResources = -10010 => "LOGIN_NO_SERVER_RESOURCES",
    /// The login timed out.
    LoginTimeout = -10011 => "LOGIN_TIMEOUT",
    /// The login was rejected by the server.
    LoginRejected = -10012 => "LOGIN_REJECTED",
    /// The login was aborted.
    LoginAborted = -10013 => "LOGIN_ABORTED",
    /// A parameter is not valid, or a frame could not be decoded.
    InvalidParameter = -10014 => "INVALID_PARAMETER",
    /// The login is not authorized.
    LoginNotAuthorized = -10015 => "LOGIN_NOT_AUTHORIZED",
    /// The token was issued for another App ID.
    InconsistentAppid = -10016 => "INCONSISTENT_APPID",
    /// The same operation is already under way.
    DuplicateOperation = -10017 => "DUPLICATE_OPERATION",
    /// The client instance was already released.
    InstanceAlreadyReleased = -10018 => "INSTANCE_ALREADY_RELEASED",
    /// The channel type is not valid for this operation.
    InvalidChannelType = -10019 => "INVALID_CHANNEL_TYPE",
    /// The encryption parameters are not valid.
    InvalidEncryptionParameter = -10020 => "INVALID_ENCRYPTION_PARAMETER",
    /// Calls are coming faster than the limit allows.
    OperationRateExceedLimitation = -10021 => "OPERATION_RATE_EXCEED_LIMITATION",
    /// The service is not supported by this deployment.
    ServiceNotSupported = -10022 => "SERVICE_NOT_SUPPORTED",
    /// The login was cancelled by a newer login or a logout.
    LoginCanceled = -10023 => "LOGIN_CANCELED",
    /// The private deployment configuration is not valid.
    InvalidPrivateConfig = -10024 => "INVALID_PRIVATE_CONFIG",
    /// The client is not connected to the server.
    NotConnected = -10025 => "NOT_CONNECTED",
    /// Renewing the token timed out.
    RenewTokenTimeout = -10026 => "RENEW_TOKEN_TIMEOUT",
    /// The stream channel is not joined.
    ChannelNotJoined = -11001 => "CHANNEL_NOT_JOINED",
    /// The message channel is not subscribed.
    ChannelNotSubscribed = -11002 => "CHANNEL_NOT_SUBSCRIBED",
    /// Too many users subscribed to the topic.
    ChannelExceedTopicUserLimitation = -11003 => "CHANNEL_EXCEED_TOPIC_USER_LIMITATION",
    /// The channel is in use by RTC.
    ChannelInReuse = -11004 => "CHANNEL_IN_REUSE",
    /// Too many channels created or subscribed.
    ChannelInstanceExceedLimitation = -11005 => "CHANNEL_INSTANCE_EXCEED_LIMITATION",
    /// The channel is in an error state.
    ChannelInErrorState = -11006 => "CHANNEL_IN_ERROR_STATE",
    /// Joining the channel failed.
    ChannelJoinFailed = -11007 => "CHANNEL_JOIN_FAILED",
    /// The topic name is not valid.
    ChannelInvalidTopicName = -11008 => "CHANNEL_INVALID_TOPIC_NAME",
    /// The message is not valid.
    ChannelInvalidMessage = -11009 => "CHANNEL_INVALID_MESSAGE",
    /// The message is larger than the limit.
    ChannelMessageLengthExceedLimitation = -11010 => "CHANNEL_MESSAGE_LENGTH_EXCEED_LIMITATION",
    /// The user list is not valid.
    ChannelInvalidUserList = -11011 => "CHANNEL_INVALID_USER_LIST",
    /// The stream channel is not available.
    ChannelNotAvailable = -11012 => "CHANNEL_NOT_AVAILABLE",
    /// The topic is not subscribed.
    ChannelTopicNotSubscribed = -11013 => "CHANNEL_TOPIC_NOT_SUBSCRIBED",
    /// Too many topics.
    ChannelExceedTopicLimitation = -11014 => "CHANNEL_EXCEED_TOPIC_LIMITATION",
    /// Joining the topic failed.
    ChannelJoinTopicFailed = -11015 => "CHANNEL_JOIN_TOPIC_FAILED",
    /// The topic is not joined.
    ChannelTopicNotJoined = -11016 => "CHANNEL_TOPIC_NOT_JOINED",
    /// The topic does not exist.
    ChannelTopicNotExist = -11017 => "CHANNEL_TOPIC_NOT_EXIST",
    /// The topic meta is not valid.
    ChannelInvalidTopicMeta = -11018 => "CHANNEL_INVALID_TOPIC_META",
    /// Subscribing timed out.
    ChannelSubscribeTimeout = -11019 => "CHANNEL_SUBSCRIBE_TIMEOUT",
    /// The same channel was subscribed too often.
    ChannelSubscribeTooFrequent = -11020 => "CHANNEL_SUBSCRIBE_TOO_FREQUENT",
    /// Subscribing failed.
    ChannelSubscribeFailed = -11021 => "CHANNEL_SUBSCRIBE_FAILED",
    /// Unsubscribing failed.
    ChannelUnsubscribeFailed = -11022 => "CHANNEL_UNSUBSCRIBE_FAILED",
    /// Encrypting the message failed.
    ChannelEncryptMessageFailed = -11023 => "CHANNEL_ENCRYPT_MESSAGE_FAILED",
    /// Publishing failed.
    ChannelPublishMessageFailed = -11024 => "CHANNEL_PUBLISH_MESSAGE_FAILED",
    /// Messages are published faster than the limit allows.
    ChannelPublishMessageTooFrequent = -11025 => "CHANNEL_PUBLISH_MESSAGE_TOO_FREQUENT",
    /// Publishing timed out.
    ChannelPublishMessageTimeout = -11026 => "CHANNEL_PUBLISH_MESSAGE_TIMEOUT",
    /// The channel is not connected.
    ChannelNotConnected = -11027 => "CHANNEL_NOT_CONNECTED",
    /// Leaving the channel failed.
    ChannelLeaveFailed = -11028 => "CHANNEL_LEAVE_FAILED",
    /// The custom type is longer than the limit.
    ChannelCustomTypeLengthOverflow = -11029 => "CHANNEL_CUSTOM_TYPE_LENGTH_OVERFLOW",
    /// The custom type has characters outside the allowed set.
    ChannelInvalidCustomType = -11030 => "CHANNEL_INVALID_CUSTOM_TYPE",
    /// The message type is not supported.
    ChannelUnsupportedMessageType = -11031 => "CHANNEL_UNSUPPORTED_MESSAGE_TYPE",
    /// Presence is not ready.
    ChannelPresenceNotReady = -11032 => "CHANNEL_PRESENCE_NOT_READY",
    /// The target user of a user-channel message is not online.
    ChannelReceiverOffline = -11033 => "CHANNEL_RECEIVER_OFFLINE",
    /// Joining was cancelled.
    ChannelJoinCanceled = -11034 => "CHANNEL_JOIN_CANCELED",
    /// The receiver is offline, but the message was stored.
    ChannelReceiverOfflineButStoreSucceeded = -11035 => "CHANNEL_RECEIVER_OFFLINE_BUT_STORE_SUCCEEDED",
    /// The receiver is offline and storing the message failed.
    ChannelReceiverOfflineAndStoreFailed = -11036 => "CHANNEL_RECEIVER_OFFLINE_AND_STORE_FAILED",
    /// The message was delivered but storing it failed.
    ChannelMessageDeliveredButStoreFailed = -11037 => "CHANNEL_MESSAGE_DELIVERED_BUT_STORE_FAILED",
    /// A storage operation failed.
    StorageOperationFailed = -12001 => "STORAGE_OPERATION_FAILED",
    /// Too many metadata items.
    StorageMetadataItemExceedLimitation = -12002 => "STORAGE_METADATA_ITEM_EXCEED_LIMITATION",
    /// A metadata item is not valid.
    StorageInvalidMetadataItem = -12003 => "STORAGE_INVALID_METADATA_ITEM",
    /// A storage argument is not valid.
    StorageInvalidArgument = -12004 => "STORAGE_INVALID_ARGUMENT",
    /// A revision is not valid.
    StorageInvalidRevision = -12005 => "STORAGE_INVALID_REVISION",
    /// The metadata is larger than the limit.
    StorageMetadataLengthOverflow = -12006 => "STORAGE_METADATA_LENGTH_OVERFLOW",
    /// The lock name is not valid.
    StorageInvalidLockName = -12007 => "STORAGE_INVALID_LOCK_NAME",
    /// The lock is not held by the caller.
    StorageLockNotAcquired = -12008 => "STORAGE_LOCK_NOT_ACQUIRED",
    /// A metadata key is not valid.
    StorageInvalidKey = -12009 => "STORAGE_INVALID_KEY",
    /// A metadata value is not valid.
    StorageInvalidValue = -12010 => "STORAGE_INVALID_VALUE",
    /// A metadata key is longer than the limit.
    StorageKeyLengthOverflow = -12011 => "STORAGE_KEY_LENGTH_OVERFLOW",
    /// A metadata value is longer than the limit.
    StorageValueLengthOverflow = -12012 => "STORAGE_VALUE_LENGTH_OVERFLOW",
    /// A metadata key is duplicated.
    StorageDuplicateKey = -12013 => "STORAGE_DUPLICATE_KEY",
    /// The revision is outdated, or the key does not exist.
    StorageOutdatedRevision = -12014 => "STORAGE_OUTDATED_REVISION",
    /// Metadata is not subscribed.
    StorageNotSubscribe = -12015 => "STORAGE_NOT_SUBSCRIBE",
    /// The metadata instance is not valid.
    StorageInvalidMetadataInstance = -12016 => "STORAGE_INVALID_METADATA_INSTANCE",
    /// Too many user-metadata subscriptions.
    StorageSubscribeUserExceedLimitation = -12017 => "STORAGE_SUBSCRIBE_USER_EXCEED_LIMITATION",
    /// A storage operation timed out.
    StorageOperationTimeout = -12018 => "STORAGE_OPERATION_TIMEOUT",
    /// Storage is not available.
    StorageNotAvailable = -12019 => "STORAGE_NOT_AVAILABLE",
    /// Presence is not connected.
    PresenceNotConnected = -13001 => "PRESENCE_NOT_CONNECTED",
    /// Presence is not writable.
    PresenceNotWritable = -13002 => "PRESENCE_NOT_WRITABLE",
    /// A presence argument is not valid.
    PresenceInvalidArgument = -13003 => "PRESENCE_INVALID_ARGUMENT",
    /// Too many states cached before joining.
    PresenceCachedTooManyStates = -13004 => "PRESENCE_CACHED_TOO_MANY_STATES",
    /// Too many state pairs.
    PresenceStateCountOverflow = -13005 => "PRESENCE_STATE_COUNT_OVERFLOW",
    /// A state key is not valid.
    PresenceInvalidStateKey = -13006 => "PRESENCE_INVALID_STATE_KEY",
    /// A state value is not valid.
    PresenceInvalidStateValue = -13007 => "PRESENCE_INVALID_STATE_VALUE",
    /// A state key is longer than the limit.
    PresenceStateKeySizeOverflow = -13008 => "PRESENCE_STATE_KEY_SIZE_OVERFLOW",
    /// A state value is longer than the limit.
    PresenceStateValueSizeOverflow = -13009 => "PRESENCE_STATE_VALUE_SIZE_OVERFLOW",
    /// A state key is duplicated.
    PresenceStateDuplicateKey = -13010 => "PRESENCE_STATE_DUPLICATE_KEY",
    /// The user is not in the channel.
    PresenceUserNotExist = -13011 => "PRESENCE_USER_NOT_EXIST",
    /// A presence operation timed out.
    PresenceOperationTimeout = -13012 => "PRESENCE_OPERATION_TIMEOUT",
    /// A presence operation failed.
    PresenceOperationFailed = -13013 => "PRESENCE_OPERATION_FAILED",
    /// A lock operation failed.
    LockOperationFailed = -14001 => "LOCK_OPERATION_FAILED",
    /// A lock operation timed out.
    LockOperationTimeout = -14002 => "LOCK_OPERATION_TIMEOUT",
    /// A lock operation is already under way.
    LockOperationPerforming = -14003 => "LOCK_OPERATION_PERFORMING",
    /// The lock already exists.
    LockAlreadyExist = -14004 => "LOCK_ALREADY_EXIST",
    /// The lock name is not valid.
    LockInvalidName = -14005 => "LOCK_INVALID_NAME",
    /// The lock is not acquired.
    LockNotAcquired = -14006 => "LOCK_NOT_ACQUIRED",
    /// Acquiring the lock failed.
    LockAcquireFailed = -14007 => "LOCK_ACQUIRE_FAILED",
    /// The lock does not exist.
    LockNotExist = -14008 => "LOCK_NOT_EXIST",
    /// Locks are not available.
    LockNotAvailable = -14009 => "LOCK_NOT_AVAILABLE",
    /// A history operation failed.
    HistoryOperationFailed = -15001 => "HISTORY_OPERATION_FAILED",
    /// A history timestamp is not valid.
    HistoryInvalidTimestamp = -15002 => "HISTORY_INVALID_TIMESTAMP",
    /// A history operation timed out.
    HistoryOperationTimeout = -15003 => "HISTORY_OPERATION_TIMEOUT",
    /// The history operation is not permitted.
    HistoryOperationNotPermitted = -15004 => "HISTORY_OPERATION_NOT_PERMITTED",
    /// History is not available.
    HistoryNotAvailable = -15005 => "HISTORY_NOT_AVAILABLE",
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(n) => write!(f, "UNKNOWN({n})"),
            known => f.write_str(known.name()),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i32(self.code())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        i32::deserialize(deserializer).map(Self::from_code)
    }
}

/// The error of one failed call: which code, which operation, and why.
///
/// This is the Signaling reference's `ErrorInfo { errorCode, operation, reason }`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{operation} failed: {code}: {reason}")]
pub struct RtmError {
    /// The stable code.
    pub code: ErrorCode,
    /// The API operation that failed, e.g. `publish`.
    pub operation: String,
    /// A human-readable explanation.
    pub reason: String,
}

impl RtmError {
    /// An error of `operation` with `code` and `reason`.
    pub fn new(code: ErrorCode, operation: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            code,
            operation: operation.into(),
            reason: reason.into(),
        }
    }
}

/// Why a frame body could not be decoded into a message (`docs/protocol.md` §3).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body is not a valid encoding of any message this version knows: garbage, a
    /// truncated body, or a message kind added by a newer peer.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The body decoded, but bytes were left after the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_reference() {
        assert_eq!(ErrorCode::ChannelReceiverOffline.code(), -11033);
        assert_eq!(
            ErrorCode::ChannelMessageLengthExceedLimitation.code(),
            -11010
        );
        assert_eq!(ErrorCode::ChannelPublishMessageTooFrequent.code(), -11025);
        assert_eq!(ErrorCode::ChannelInstanceExceedLimitation.code(), -11005);
        assert_eq!(ErrorCode::LockNotAvailable.code(), -14009);
        assert_eq!(ErrorCode::HistoryNotAvailable.code(), -15005);
    }

    #[test]
    fn every_code_round_trips_through_its_number() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(seen.insert(code.code()), "duplicate number {}", code.code());
            assert_eq!(ErrorCode::from_code(code.code()), code);
        }
        assert_eq!(ErrorCode::from_code(-99999), ErrorCode::Unknown(-99999));
    }

    #[test]
    fn debug_and_display_print_the_name() {
        assert_eq!(format!("{:?}", ErrorCode::NotLogin), "NOT_LOGIN");
        assert_eq!(ErrorCode::NotLogin.to_string(), "NOT_LOGIN (-10002)");
        assert_eq!(format!("{:?}", ErrorCode::Unknown(-7)), "UNKNOWN(-7)");
    }

    #[test]
    fn unknown_codes_survive_the_wire() {
        let bytes = postcard::to_allocvec(&ErrorCode::Unknown(-16001)).unwrap();
        let back: ErrorCode = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, ErrorCode::Unknown(-16001));
    }
}
