//! Procedural macros of the `resilience` framework. Depend on the `resilience` facade,
//! which re-exports them; expansions reach the runtime only through
//! `::resilience::__private`.
//!
//! Available so far: the registration macros. The attribute macros (`#[resilient]`,
//! `#[database_call]`, …) are not part of this release yet.

mod args;
mod registration;
mod value;

use proc_macro::TokenStream;

macro_rules! registration_macro {
    ($(#[$doc:meta])* $name:ident => $ty:literal) => {
        $(#[$doc])*
        #[proc_macro]
        pub fn $name(input: TokenStream) -> TokenStream {
            registration::expand(input.into(), $ty).into()
        }
    };
}

registration_macro!(
    /// Registers a database dependency: `register_database_dependency!("user_db", max_concurrent = 10)`.
    ///
    /// Takes the dependency's name, then any keys of the runtime configuration: flat
    /// (`timeout = "5s"`, `max_concurrent = 10`, `max_wait = "50ms"`, `queue_capacity = 100`,
    /// `kind = thread_pool`) and grouped (`circuit_breaker(failure_threshold = 3)`,
    /// `retry(max_attempts = 2, base_delay = "100ms")`, `bulkhead(...)`, `rate_limit(rate = 100, burst = 10)`).
    /// Over the `Database` preset (10 concurrent calls, 10 s, breaker after 5 failures).
    /// Evaluates to the registered `&'static Dependency`; registering again, or after the
    /// name was first used, reconfigures it in place.
    ///
    /// # Compile errors
    /// A name that is not a string literal; an unknown key (with the closest known one);
    /// a duration without a unit; a zero count or timeout; a `failure_threshold` larger
    /// than the window; a `success_threshold` above `half_open_max_calls`.
    register_database_dependency => "Database"
);
registration_macro!(
    /// Registers an external API dependency (preset: 15 concurrent calls, 15 s, breaker
    /// after 3 failures). Same keys and errors as [`register_database_dependency!`].
    register_api_dependency => "ExternalApi"
);
registration_macro!(
    /// Registers a cache dependency (preset: 50 concurrent calls, 2 s, no breaker). Same
    /// keys and errors as [`register_database_dependency!`].
    register_cache_dependency => "Cache"
);
registration_macro!(
    /// Registers a message-queue dependency (preset: 20 concurrent calls, 10 s, breaker
    /// after 5 failures). Same keys and errors as [`register_database_dependency!`].
    register_message_queue_dependency => "MessageQueue"
);
registration_macro!(
    /// Registers a file-system dependency (preset: 8 worker threads, 30 s, breaker after 5
    /// failures, thread-pool bulkhead). Same keys and errors as
    /// [`register_database_dependency!`].
    register_file_system_dependency => "FileSystem"
);
