//! What every typed client is made of: its channel, who it calls as, the generated client on
//! that channel, requests carrying the caller's credentials, and one unary call with the
//! peer's refusal mapped once. Each client module adds its typed methods.

/// The parts every typed client shares: its channel, who it calls as, the generated client on
/// that channel, and requests carrying the caller's credentials.
macro_rules! typed_client {
    ($(#[$doc:meta])* $name:ident, $peer:expr, $raw:ty) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            channel: $crate::PeerChannel,
            caller: $crate::Caller,
        }

        impl $name {
            /// A client on `channel`, calling as `caller`.
            pub fn new(channel: $crate::PeerChannel, caller: $crate::Caller) -> Self {
                Self { channel, caller }
            }

            /// The same client on the same channel, calling as the person whose token this is.
            pub fn as_person(&self, bearer: $crate::Bearer) -> Self {
                Self {
                    channel: self.channel.clone(),
                    caller: $crate::Caller::Person(bearer),
                }
            }

            pub fn channel(&self) -> &$crate::PeerChannel {
                &self.channel
            }

            pub fn caller(&self) -> &$crate::Caller {
                &self.caller
            }

            /// The generated client on this client's channel, for RPCs without a typed method.
            /// Build its requests with [`Self::request`].
            pub fn raw(&self) -> $raw {
                <$raw>::new(self.channel.clone())
            }

            /// `message` as a request carrying the caller's credentials and the trace context.
            pub async fn request<T>(
                &self,
                message: T,
            ) -> Result<tonic::Request<T>, $crate::PeerError> {
                self.caller.request($peer, message).await
            }

            /// One unary call: `message` as a request with the caller's credentials, `rpc`
            /// on the generated client, and the answer or the peer's refusal as a
            /// [`PeerError`](crate::PeerError). For example
            /// `client.call(message, |mut raw, request| async move { raw.get_user(request).await })`.
            pub async fn call<M, R, F, Fut>(
                &self,
                message: M,
                rpc: F,
            ) -> Result<R, $crate::PeerError>
            where
                F: FnOnce($raw, tonic::Request<M>) -> Fut,
                Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
            {
                let request = self.request(message).await?;
                rpc(self.raw(), request)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| self.refused(status))
            }

            /// A status from this peer (from a [`Self::raw`] call) as a
            /// [`PeerError`](crate::PeerError); a service whose token was refused forgets it.
            pub fn refused(&self, status: tonic::Status) -> $crate::PeerError {
                self.caller.refused($peer, status)
            }
        }
    };
}
pub(crate) use typed_client;
