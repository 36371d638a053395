// Type-level checks, type by type, between agora-rtm-sdk's declarations ("theirs") and this
// package ("ours"): what an app hands the SDK (configuration, options) must be accepted by
// ours when theirs accepts it, and what the SDK hands the app (responses, events) must fit
// where the app expects theirs. Compiled by `npm run typecheck`; a mismatch is a compile error.

import type * as T from 'agora-rtm-sdk';
import type { RTMEvents as TE } from 'agora-rtm-sdk';
import type * as O from '../../src/index.js';
import type { RTMEvents as OE } from '../../src/index.js';

type Is<A, B> = [A] extends [B] ? true : false;
type Check<X extends true> = X;

// The app → SDK direction: theirs fits ours.
export type Inputs = [
  Check<Is<T.RTMConfig, O.RTMConfig>>,
  Check<Is<T.PrivateConfig, O.PrivateConfig>>,
  Check<Is<T.SubscribeOptions, O.SubscribeOptions>>,
  Check<Is<T.PublishOptions, O.PublishOptions>>,
  Check<Is<T.JoinOptions, O.JoinOptions>>,
  Check<Is<T.joinTopicOptions, O.joinTopicOptions>>,
  Check<Is<T.PublishTopicMessageOptions, O.PublishTopicMessageOptions>>,
  Check<Is<T.SubscribeTopicOptions, O.SubscribeTopicOptions>>,
  Check<Is<T.UnsubscribeTopicOptions, O.UnsubscribeTopicOptions>>,
  Check<Is<T.WhoNowOptions, O.WhoNowOptions>>,
  Check<Is<T.RemoveStateOptions, O.RemoveStateOptions>>,
  Check<Is<T.StateDetail, O.StateDetail>>,
  Check<Is<T.MetadataItem, O.MetadataItem>>,
  Check<Is<T.MetadataOptions, O.MetadataOptions>>,
  Check<Is<T.RemoveChannelMetadataOptions, O.RemoveChannelMetadataOptions>>,
  Check<Is<T.RemoveUserMetadataOptions, O.RemoveUserMetadataOptions>>,
  Check<Is<T.SetOrUpdateUserMetadataOptions, O.SetOrUpdateUserMetadataOptions>>,
  Check<Is<T.GetUserMetadataOptions, O.GetUserMetadataOptions>>,
  Check<Is<T.SetLockOptions, O.SetLockOptions>>,
  Check<Is<T.AcquireLockOptions, O.AcquireLockOptions>>,
  Check<Is<T.GetHistoryMessageOptions, O.GetHistoryMessageOptions>>,
  Check<Is<T.RenewTokenOptions, O.RenewTokenOptions>>,
  Check<Is<T.ChannelType, O.ChannelType>>,
];

// The SDK → app direction: ours fits theirs.
export type Outputs = [
  Check<Is<O.LoginResponse, T.LoginResponse>>,
  Check<Is<O.PublishResponse, T.PublishResponse>>,
  Check<Is<O.SubscribeResponse, T.SubscribeResponse>>,
  Check<Is<O.WhoNowResponse, T.WhoNowResponse>>,
  Check<Is<O.WhereNowResponse, T.WhereNowResponse>>,
  Check<Is<O.GetStateResponse, T.GetStateResponse>>,
  Check<Is<O.GetChannelMetadataResponse, T.GetChannelMetadataResponse>>,
  Check<Is<O.GetUserMetadataResponse, T.GetUserMetadataResponse>>,
  Check<Is<O.SetChannelMetadataResponse, T.SetChannelMetadataResponse>>,
  Check<Is<O.GetLockResponse, T.GetLockResponse>>,
  Check<Is<O.AcquireLockResponse, T.AcquireLockResponse>>,
  Check<Is<O.GetMessagesResponse, T.GetMessagesResponse>>,
  Check<Is<O.SubscribeTopicResponse, T.SubscribeTopicResponse>>,
  Check<Is<O.JoinTopicResponse, T.JoinTopicResponse>>,
  Check<Is<O.GetSubscribedUserListResponse, T.GetSubscribedUserListResponse>>,
  Check<Is<O.ErrorInfo, T.ErrorInfo>>,
  Check<Is<OE.MessageEvent, TE.MessageEvent>>,
  Check<Is<OE.PresenceEvent, TE.PresenceEvent>>,
  Check<Is<OE.TopicEvent, TE.TopicEvent>>,
  Check<Is<OE.StorageEvent, TE.StorageEvent>>,
  Check<Is<OE.LockEvent, TE.LockEvent>>,
  Check<Is<OE.LinkStateEvent, TE.LinkStateEvent>>,
  Check<Is<OE.TokenEvent, TE.TokenEvent>>,
];
