//! Procedural macros of the `resilience` framework. Depend on the `resilience` facade,
//! which re-exports them; expansions reach the runtime only through
//! `::resilience::__private`.
//!
//! The attributes (`#[resilient]`, `#[resilience_pattern]`, `#[database_call]`,
//! `#[api_call]`, `#[cache_call]`, `#[message_queue_call]`, `#[file_system_call]`) run a
//! function's body through a named dependency's policies; the registration macros
//! (`register_database_dependency!` and its siblings) configure a dependency at start-up.
//! All of them check their keys and values when the code compiles.

mod args;
mod attribute;
mod keys;
mod registration;
mod value;

use proc_macro::TokenStream;

use attribute::Attribute;

/// An attribute's entry with the docs every attribute shares: the configuration keys,
/// the handlers and what the function may be.
macro_rules! doc_attribute {
    ($(#[$doc:meta])* pub fn $($rest:tt)*) => {
        $(#[$doc])*
        ///
        /// # Configuration keys
        ///
        /// Every key is optional and wins over the dependency's own configuration, its
        /// preset and the global defaults. Durations are string literals with a unit
        /// (`"250ms"`, `"30s"`, `"5m"`, `"1h"`); counts are at least 1. Values are
        /// checked with the runtime's own rules (`resilience-rules`), so what compiles
        /// runs as written: at most 1,000 attempts, a window of at most 262,144 calls or
        /// at least 1 ms, an `exponential_base` of at least 1.0, a `base_delay` no longer
        /// than `max_delay` (30 s unless given), `slow_call_rate` only with
        /// `slow_call_duration`, `minimum_calls` within the window, at most 4,096
        /// thread-pool workers.
        ///
        /// | Key | Type | Default | Meaning |
        /// |---|---|---|---|
        /// | `timeout` | duration | preset's (30 s global) | limit on each attempt |
        /// | `max_concurrent` | count | preset's | bulkhead size (switches the bulkhead on) |
        /// | `max_wait` | duration | `"0ms"` (fail fast) | how long a call waits for a bulkhead slot |
        /// | `queue_capacity` | number | 100 | calls queued for a thread-pool bulkhead |
        /// | `kind` | `semaphore` \| `thread_pool` \| `adaptive` | `semaphore` | bulkhead kind (`adaptive`: a limit learned from latency, starting at `max_concurrent`, 20 unless given) |
        /// | `circuit_breaker(...)` | group | preset's | `enabled`, `failure_threshold`, `failure_rate` (%), `minimum_calls`, `window_size`, `window_duration`, `slow_call_duration`, `slow_call_rate` (%), `recovery_timeout`, `half_open_max_calls`, `success_threshold`, `shared` (one breaker for every instance of the service, with `resilience::shared_state`) |
        /// | `retry(...)` | group | preset's | `enabled`, `max_attempts` (counts the first call), `base_delay`, `exponential_base`, `max_delay`, `jitter` (`none` \| `full` \| `equal` \| `decorrelated`), `max_elapsed`, `budget(ratio, min_per_second, window)`: a retry budget shared by every call of the dependency (`budget()` for the defaults 0.2 / 10 / `"10s"`; `ratio` in (0, 1], `window` from 100 ms to 24 h); a retry it refuses returns the attempt's error, and enclosing attributed calls on the task do not retry it |
        /// | `bulkhead(...)` | group | preset's | `enabled`, `kind`, `max_concurrent`, `max_wait`, `queue_capacity`, and for `kind = adaptive` `min_limit` (1) and `max_limit` (200), with `min_limit <= max_concurrent <= max_limit` (wins over the flat keys) |
        /// | `hedge(...)` | group | none | `max_attempts` (2, at most 10), `delay` (a duration, or a percentile of recent latency such as `"p95"`, the default): another attempt when none has answered after `delay`; only for calls marked `idempotent = true` |
        /// | `chaos(...)` | group | none | `latency`, `latency_rate`, `error_rate` (fractions in [0, 1]), `every`, `max_active`, `seed`: fault injection, which needs the `chaos` cargo feature and `resilience: { chaos: { enabled: true } }` in the applied settings (inert otherwise) |
        /// | `rate_limit(...)` | group | none | `rate` (calls per second, from `0.000001` to `1e9`), `burst`, `max_keys`, `shared` (one limit for every instance, with `resilience::shared_state`; not with `key`); on attributes also `key = <argument>`: one limit per value of that argument (any `Hash` type, such as a tenant or user id; at most `max_keys`, default 10,000, tracked; checked once per call, before the first attempt) |
            ///
            /// # Handlers
            ///
            /// | Key | Type | Default | Meaning |
            /// |---|---|---|---|
            /// | `fallback` | path to a `fn` or `async fn` | none | called with the same arguments plus the error when the call fails; returns the same type |
            /// | `retry_if` | path to `fn(&E) -> bool` | every error | which errors of the body are retried (rejections never are, timeouts always) |
            /// | `record_if` | path to `fn(&E) -> bool` | every error | which errors count as breaker failures |
            /// | `idempotent` | `true` \| `false` | `false` | the call is safe to repeat: its dependency's `hedge` applies (an `async fn` that lends nothing mutably; each attempt runs a clone of the call's arguments) |
            ///
            /// # The function
            ///
            /// An `async fn` or a plain `fn` (the blocking pipeline, with no runtime
            /// needed), free or a method taking `&self` or `&mut self`, in a trait impl or
            /// generic. A plain `fn` whose arguments are all taken by value and, like its
            /// result, `Send + 'static` runs each attempt on its dependency's thread-pool
            /// bulkhead when it has one, so a timeout is returned on time (the abandoned
            /// attempt keeps its worker until it ends); any other plain `fn` runs on the
            /// caller's thread, where an attempt that overran is reported as a timeout when
            /// it returns, and not retried. It must return `Result<T, E>` with `E: From<resilience::ResilienceError>`;
            /// the signature stays as written. Retries run the body again: borrowed
            /// arguments are used as they are, an argument of a primitive type (`u64`,
            /// `bool`, …) is copied, and any other argument taken by value must be `Clone`
            /// (each attempt but the last gets a clone; with a `fallback`, every attempt
            /// does, and the fallback gets the original).
            ///
            /// A function that calls itself, or another function on the same dependency,
            /// goes through the dependency's breaker and bulkhead again: the inner call
            /// takes a second bulkhead slot, and its failures (and a rejection it meets,
            /// returned through the outer body as that body's error) count against the
            /// breaker twice. Give the inner call its own dependency name to avoid that.
            ///
            /// Each call site resolves its dependency once and keeps it; a call allocates
            /// nothing and takes no lock (a bulkhead wait or a retry's backoff aside).
            /// Registering or reconfiguring the dependency later reaches every call site on
            /// its next call.
        #[proc_macro_attribute]
        pub fn $($rest)*
    };
}

doc_attribute! {
    /// Runs a function through the policies of a strategy: `#[resilient(strategy = External)]`.
    ///
    /// | Key | Type | Default | Meaning |
    /// |---|---|---|---|
    /// | `name` | string | module path and function name | the dependency this call belongs to |
    /// | `strategy` | `Internal` \| `External` \| `Database` \| `Cache` (or `InternalService`, `ExternalService`) | `Internal` | the preset used if the name was never registered |
    ///
    /// ```
    /// use resilience::{resilient, ResilienceError};
    ///
    /// #[derive(Debug)]
    /// enum PaymentError { Declined, Unavailable(ResilienceError) }
    /// impl From<ResilienceError> for PaymentError {
    ///     fn from(e: ResilienceError) -> Self { PaymentError::Unavailable(e) }
    /// }
    ///
    /// #[resilient(name = "payment_service", strategy = External, timeout = "5s", retry(max_attempts = 2))]
    /// async fn charge(amount_cents: u64) -> Result<String, PaymentError> {
    ///     if amount_cents == 0 { return Err(PaymentError::Declined) }
    ///     Ok(format!("charged {amount_cents}"))
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// assert_eq!(charge(250).await.unwrap(), "charged 250");
    /// # }
    /// ```
    ///
    /// # Compile errors
    ///
    /// Each of these points at the offending token, all at once, with the closest known
    /// name where one fits: an unknown or repeated key; an unknown `strategy`; a key of
    /// another attribute (`dependency`); a duration without a unit or quotes; a zero
    /// count or timeout; a percentage outside (0, 100]; a `failure_threshold` larger
    /// than the window; a `success_threshold` above `half_open_max_calls`; a return
    /// type that is not `Result`, or whose error does not convert from
    /// `ResilienceError`; `self` taken by value; a `const fn`; an argument taken by
    /// value that is not `Clone`. The function is still emitted as written, so one
    /// mistake does not cascade.
    pub fn resilient(args: TokenStream, item: TokenStream) -> TokenStream {
        attribute::expand(Attribute::Resilient, args.into(), item.into()).into()
    }
}

doc_attribute! {
    /// Runs a function through exactly the policies it names:
    /// `#[resilience_pattern(timeout = "30s", retry(max_attempts = 3), circuit_breaker(failure_threshold = 5))]`.
    ///
    /// A policy whose group is not given is off (no breaker without `circuit_breaker(...)`,
    /// no retries without `retry(...)`, no bulkhead without `bulkhead(...)` or
    /// `max_concurrent`); the timeout is the global default (30 s) unless given. Within a
    /// group, keys not given take the global defaults.
    ///
    /// | Key | Type | Default | Meaning |
    /// |---|---|---|---|
    /// | `name` | string | module path and function name | the dependency this call belongs to |
    ///
    /// ```
    /// use resilience::{resilience_pattern, ResilienceError};
    ///
    /// #[derive(Debug)]
    /// struct ReportError(String);
    /// impl From<ResilienceError> for ReportError {
    ///     fn from(e: ResilienceError) -> Self { ReportError(e.to_string()) }
    /// }
    ///
    /// #[resilience_pattern(timeout = "30s", retry(max_attempts = 3, base_delay = "200ms"),
    ///                      bulkhead(max_concurrent = 10, max_wait = "50ms"))]
    /// fn render(rows: &[u32]) -> Result<u32, ReportError> {
    ///     Ok(rows.iter().sum())
    /// }
    ///
    /// assert_eq!(render(&[1, 2, 3]).unwrap(), 6);
    /// ```
    ///
    /// # Compile errors
    ///
    /// As for [`resilient`](macro@resilient), except that `strategy` is refused.
    pub fn resilience_pattern(args: TokenStream, item: TokenStream) -> TokenStream {
        attribute::expand(Attribute::Pattern, args.into(), item.into()).into()
    }
}

macro_rules! type_attribute {
    ($name:ident, $variant:literal, $preset:literal, $dependency:literal) => {
        doc_attribute! {
            #[doc = concat!("Runs a function through the policies of a named ", $preset, ": `#[", stringify!($name), "(dependency = \"", $dependency, "\")]`.")]
            ///
            /// The dependency is the one registered under that name (by a registration macro, a
            /// settings file or `Registry::register`); until it is, it gets its type's preset
            /// (see `DependencyType`) with the keys given here.
            ///
            /// | Key | Type | Default | Meaning |
            /// |---|---|---|---|
            /// | `dependency` | string | required | the dependency's name |
            /// | `operation` | string | none | names the operation in each call's tracing span |
            ///
            /// ```
            /// # use resilience::ResilienceError;
            /// # #[derive(Debug)] struct Error(String);
            /// # impl From<ResilienceError> for Error { fn from(e: ResilienceError) -> Self { Error(e.to_string()) } }
            #[doc = concat!("#[resilience::", stringify!($name), "(dependency = \"", $dependency, "\", operation = \"load\")]")]
            /// async fn load(id: u64) -> Result<u64, Error> {
            ///     Ok(id * 2)
            /// }
            /// # #[tokio::main(flavor = "current_thread")] async fn main() { assert_eq!(load(21).await.unwrap(), 42); }
            /// ```
            ///
            /// # Compile errors
            ///
            /// As for [`resilient`](macro@resilient); also a missing `dependency`, and
            /// `strategy` or `name`, which belong to `#[resilient]`.
            pub fn $name(args: TokenStream, item: TokenStream) -> TokenStream {
                attribute::expand(Attribute::Type(stringify!($name), $variant), args.into(), item.into()).into()
            }
        }
    };
}

type_attribute!(
    database_call,
    "Database",
    "database (preset: 10 concurrent calls, 10 s, breaker after 5 failures)",
    "user_db"
);
type_attribute!(
    api_call,
    "ExternalApi",
    "external API (preset: 15 concurrent calls, 15 s, breaker after 3 failures)",
    "payment_gateway"
);
type_attribute!(cache_call, "Cache", "cache (preset: 50 concurrent calls, 2 s, no breaker)", "session_cache");
type_attribute!(
    message_queue_call,
    "MessageQueue",
    "message queue (preset: 20 concurrent calls, 10 s, breaker after 5 failures)",
    "orders_queue"
);
type_attribute!(
    file_system_call,
    "FileSystem",
    "file system (preset: 8 worker threads, 30 s, breaker after 5 failures)",
    "reports_fs"
);

macro_rules! registration_macro {
    ($(#[$doc:meta])* $name:ident => $ty:literal) => {
        $(#[$doc])*
        #[proc_macro]
        pub fn $name(input: TokenStream) -> TokenStream {
            registration::expand(input.into(), $ty, concat!("`", stringify!($name), "!`")).into()
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
