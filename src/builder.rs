//! [`ServiceBuilderExt`]: the session layer as a `ServiceBuilder` method, as tower-http does for
//! its middleware.

use tower::ServiceBuilder;
use tower_layer::Stack;

use crate::layer::SessionLayer;
use crate::reauth::NoReauth;
use crate::session::Session;
use crate::store::TokenStore;

/// Adds [`SessionLayer`] to a [`ServiceBuilder`].
///
/// ```
/// use agent_session::{ServiceBuilderExt as _, Session};
/// use tower::ServiceBuilder;
///
/// # fn run(channel: tonic::transport::Channel) {
/// let session = Session::in_dir("/home/me/.agent");
/// let service = ServiceBuilder::new().session(session).service(channel);
/// # let _ = service; }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// Keeps `session` on every call of the service being built.
    fn session<St: TokenStore>(
        self,
        session: Session<St>,
    ) -> ServiceBuilder<Stack<SessionLayer<NoReauth, St>, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn session<St: TokenStore>(
        self,
        session: Session<St>,
    ) -> ServiceBuilder<Stack<SessionLayer<NoReauth, St>, L>> {
        self.layer(SessionLayer::new(session))
    }
}

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}
