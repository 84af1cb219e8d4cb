//! Macros shared by the crate's middleware.

/// `get_ref`, `get_mut` and `into_inner` for a service whose wrapped service is its `inner`
/// field, as every tower-http middleware offers them (the client crate's services do the same).
macro_rules! inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// The inner service, unwrapped.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}
