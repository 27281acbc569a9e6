//! The keys of the runtime configuration, as macro arguments (one struct per group,
//! field names matching the core's `*Overrides` one to one).

use darling::FromMeta;
use proc_macro2::TokenStream;
use quote::quote;
use syn::{Expr, ExprPath};

use crate::keys::closest;
use crate::value::{DurationArg, Number, Percent, Positive};

fn opt<T>(value: &Option<T>, tokens: impl Fn(&T) -> TokenStream) -> TokenStream {
    match value {
        Some(v) => {
            let t = tokens(v);
            quote!(::core::option::Option::Some(#t))
        }
        None => quote!(::core::option::Option::None),
    }
}

/// A bare identifier out of `expected`; `what` names it in errors.
fn word<'a>(expr: &'a Expr, what: &str, expected: &[&str]) -> darling::Result<&'a syn::Ident> {
    let ident = match expr {
        Expr::Path(ExprPath { path, .. }) => path.get_ident(),
        _ => None,
    };
    let one_of = || expected.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ");
    match ident {
        Some(i) if expected.contains(&i.to_string().as_str()) => Ok(i),
        Some(i) => {
            let message = match closest(&i.to_string(), expected.iter().copied()) {
                Some(near) => format!("unknown {what} `{i}`, did you mean `{near}`?"),
                None => format!("unknown {what} `{i}`; expected one of: {}", one_of()),
            };
            Err(darling::Error::custom(message).with_span(i))
        }
        None => {
            let hint = match expr {
                Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => format!(", without quotes: `{}`", s.value()),
                _ => String::new(),
            };
            Err(darling::Error::custom(format!("expected a {what}, one of: {}{hint}", one_of())).with_span(expr))
        }
    }
}

/// A name: `name = "payments"`, `dependency = "user_db"`, `operation = "get_user"`.
#[derive(Debug, Clone)]
pub(crate) struct NameArg(pub(crate) syn::LitStr);

impl FromMeta for NameArg {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        match expr {
            Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Ok(Self(s.clone())),
            other => {
                let hint = match other {
                    Expr::Path(p) => p.path.get_ident().map(|i| format!(" such as \"{i}\"")),
                    _ => None,
                };
                let hint = hint.unwrap_or_else(|| String::from(" such as \"payments\""));
                Err(darling::Error::custom(format!("must be a string literal{hint}")).with_span(other))
            }
        }
    }
}

/// `strategy = Internal | External | Database | Cache` (or the long forms).
#[derive(Debug, Clone)]
pub(crate) struct StrategyArg(pub(crate) syn::Ident);

impl FromMeta for StrategyArg {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        let accepted = ["Internal", "External", "Database", "Cache", "InternalService", "ExternalService"];
        let i = word(expr, "strategy", &accepted)?;
        let variant = match i.to_string().as_str() {
            "Internal" | "InternalService" => "InternalService",
            "External" | "ExternalService" => "ExternalService",
            "Database" => "Database",
            _ => "Cache",
        };
        Ok(Self(syn::Ident::new(variant, i.span())))
    }
}

/// `jitter = none | full | equal | decorrelated`.
#[derive(Debug, Clone)]
pub(crate) struct JitterArg(syn::Ident);

impl FromMeta for JitterArg {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        let i = word(expr, "jitter", &["none", "full", "equal", "decorrelated"])?;
        let variant = match i.to_string().as_str() {
            "full" => "Full",
            "equal" => "Equal",
            "decorrelated" => "Decorrelated",
            _ => "None",
        };
        Ok(Self(syn::Ident::new(variant, i.span())))
    }
}

/// `kind = semaphore | thread_pool | adaptive`.
#[derive(Debug, Clone)]
pub(crate) struct KindArg(syn::Ident);

impl FromMeta for KindArg {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        let i = word(expr, "bulkhead kind", &["semaphore", "thread_pool", "adaptive"])?;
        let variant = match i.to_string().as_str() {
            "thread_pool" => "ThreadPool",
            "adaptive" => "Adaptive",
            _ => "Semaphore",
        };
        Ok(Self(syn::Ident::new(variant, i.span())))
    }
}

#[derive(Debug, Default, FromMeta)]
#[darling(default)]
pub(crate) struct BreakerArgs {
    enabled: Option<bool>,
    failure_threshold: Option<Positive>,
    failure_rate: Option<Percent>,
    minimum_calls: Option<Positive>,
    window_size: Option<Positive>,
    window_duration: Option<DurationArg>,
    slow_call_duration: Option<DurationArg>,
    slow_call_rate: Option<Percent>,
    recovery_timeout: Option<DurationArg>,
    half_open_max_calls: Option<Positive>,
    success_threshold: Option<Positive>,
    shared: Option<bool>,
}

#[derive(Debug, Default, FromMeta)]
#[darling(default)]
pub(crate) struct RetryArgs {
    enabled: Option<bool>,
    max_attempts: Option<Positive>,
    base_delay: Option<DurationArg>,
    exponential_base: Option<Number>,
    max_delay: Option<DurationArg>,
    jitter: Option<JitterArg>,
    max_elapsed: Option<DurationArg>,
    budget: Option<BudgetArgs>,
}

/// `retry(budget(ratio, min_per_second, window))`; `budget()` takes the defaults.
#[derive(Debug, Default, FromMeta)]
#[darling(default)]
pub(crate) struct BudgetArgs {
    ratio: Option<Number>,
    min_per_second: Option<Number>,
    window: Option<DurationArg>,
}

#[derive(Debug, Default, FromMeta)]
#[darling(default)]
pub(crate) struct BulkheadArgs {
    enabled: Option<bool>,
    kind: Option<KindArg>,
    max_concurrent: Option<Positive>,
    max_wait: Option<DurationArg>,
    queue_capacity: Option<Number>,
    min_limit: Option<Positive>,
    max_limit: Option<Positive>,
}

/// `chaos(latency, latency_rate, error_rate, every, max_active, seed)`.
#[derive(Debug, Default, FromMeta)]
#[darling(default)]
pub(crate) struct ChaosArgs {
    latency: Option<DurationArg>,
    latency_rate: Option<Number>,
    error_rate: Option<Number>,
    every: Option<Positive>,
    max_active: Option<Positive>,
    seed: Option<Number>,
}

/// `hedge(max_attempts, delay)`; `hedge()` takes the defaults (2 attempts, `"p95"`).
#[derive(Debug, Default, FromMeta)]
#[darling(default)]
pub(crate) struct HedgeArgs {
    max_attempts: Option<Positive>,
    delay: Option<HedgeDelayArg>,
}

/// `delay = "50ms"` or `delay = "p95"`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HedgeDelayArg {
    After(DurationArg),
    Percentile(f64, proc_macro2::Span),
}

impl FromMeta for HedgeDelayArg {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        if let Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) = expr {
            if let Some(p) = s.value().strip_prefix('p') {
                let p: f64 = p.parse().map_err(|_| {
                    darling::Error::custom("a percentile is written `\"p95\"`, `\"p99.9\"`").with_span(s)
                })?;
                return Ok(Self::Percentile(p, s.span()));
            }
        }
        DurationArg::from_expr(expr).map(Self::After)
    }
}

#[derive(Debug, Default, FromMeta)]
#[darling(default)]
pub(crate) struct RateLimitArgs {
    rate: Option<Number>,
    burst: Option<Positive>,
    max_keys: Option<Positive>,
    /// Attributes only: the argument whose values each get their own limit.
    key: Option<KeyArg>,
    shared: Option<bool>,
}

/// `key = <argument>`: the name of one of the function's arguments.
#[derive(Debug, Clone)]
pub(crate) struct KeyArg(pub(crate) syn::Ident);

impl FromMeta for KeyArg {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        match expr {
            Expr::Path(p) if p.qself.is_none() => match p.path.get_ident() {
                Some(ident) => Ok(Self(ident.clone())),
                None => Err(darling::Error::custom("must name one of the function's arguments").with_span(expr)),
            },
            other => {
                Err(darling::Error::custom("must name one of the function's arguments, such as `key = client_id`")
                    .with_span(other))
            }
        }
    }
}

/// A call site's `rate_limit(key = …)`: the argument, and the limit of each of its values.
pub(crate) struct KeyLimit {
    pub(crate) argument: syn::Ident,
    pub(crate) tokens: TokenStream,
}

/// The keys of the runtime configuration: what a registration macro takes after the
/// name, and what every attribute takes.
#[derive(Debug, Default, FromMeta)]
#[darling(default)]
pub(crate) struct ConfigArgs {
    timeout: Option<DurationArg>,
    max_concurrent: Option<Positive>,
    max_wait: Option<DurationArg>,
    queue_capacity: Option<Number>,
    kind: Option<KindArg>,
    circuit_breaker: Option<BreakerArgs>,
    retry: Option<RetryArgs>,
    bulkhead: Option<BulkheadArgs>,
    rate_limit: Option<RateLimitArgs>,
    hedge: Option<HedgeArgs>,
    chaos: Option<ChaosArgs>,
}

fn dur(d: &DurationArg) -> TokenStream {
    d.tokens()
}

fn float(n: f64) -> TokenStream {
    quote!(#n)
}

impl BreakerArgs {
    fn tokens(&self) -> TokenStream {
        let enabled = opt(&self.enabled, |b| quote!(#b));
        let failure_threshold = opt(&self.failure_threshold, |p| p.u32_tokens());
        let failure_rate = opt(&self.failure_rate, |p| float(p.0));
        let minimum_calls = opt(&self.minimum_calls, |p| p.u32_tokens());
        let window_size = opt(&self.window_size, |p| p.u32_tokens());
        let window_duration = opt(&self.window_duration, dur);
        let slow_call_duration = opt(&self.slow_call_duration, dur);
        let slow_call_rate = opt(&self.slow_call_rate, |p| float(p.0));
        let recovery_timeout = opt(&self.recovery_timeout, dur);
        let half_open_max_calls = opt(&self.half_open_max_calls, |p| p.u32_tokens());
        let success_threshold = opt(&self.success_threshold, |p| p.u32_tokens());
        let shared = opt(&self.shared, |b| quote!(#b));
        quote!(::resilience::__private::BreakerOverrides {
            enabled: #enabled,
            failure_threshold: #failure_threshold,
            failure_rate: #failure_rate,
            minimum_calls: #minimum_calls,
            window_size: #window_size,
            window_duration: #window_duration,
            slow_call_duration: #slow_call_duration,
            slow_call_rate: #slow_call_rate,
            recovery_timeout: #recovery_timeout,
            half_open_max_calls: #half_open_max_calls,
            success_threshold: #success_threshold,
            shared: #shared,
        })
    }

    /// The shared rules (`resilience-rules`) on the keys given, and across them: all
    /// errors at once.
    fn validate(&self, errors: &mut darling::error::Accumulator, preset_threshold: Option<u32>) {
        // A count-based window: the one given, or the default.
        let default = resilience_rules::DEFAULT_WINDOW_SIZE;
        let window = match (self.window_size, self.window_duration) {
            (Some(w), _) => Some((w.value as u32, format!("a `window_size` of {} calls", w.value))),
            (None, None) => Some((default, format!("the default window of {default} calls; set `window_size`"))),
            (None, Some(_)) => None,
        };
        if let Some(w) = self.window_size {
            rule(errors, "window_size", w.span, resilience_rules::window_size(w.value as u32));
        }
        if let (Some(t), Some((size, window))) = (self.failure_threshold, &window) {
            if resilience_rules::failure_threshold(t.value as u32, *size).is_err() {
                errors.push(
                    darling::Error::custom(format!(
                        "`failure_threshold` of {} can never be reached in {window}",
                        t.value
                    ))
                    .with_span(&t.span),
                );
            }
        }
        // A window given without a threshold must hold the preset's threshold.
        if let (Some(w), None, Some(preset)) = (self.window_size, self.failure_threshold, preset_threshold) {
            if resilience_rules::failure_threshold(preset, w.value as u32).is_err() {
                errors.push(
                    darling::Error::custom(format!(
                        "a `window_size` of {} calls can never reach the preset's `failure_threshold` of {preset}; \
                         set `failure_threshold` too",
                        w.value
                    ))
                    .with_span(&w.span),
                );
            }
        }
        let rates = self.failure_rate.is_some() || self.slow_call_duration.is_some();
        if let (Some(m), Some((size, _)), true) = (self.minimum_calls, &window, rates) {
            rule(errors, "minimum_calls", m.span, resilience_rules::minimum_calls(m.value as u32, *size));
        }
        if let Some(d) = self.window_duration {
            rule(errors, "window_duration", d.span, resilience_rules::window_duration(d.duration()));
        }
        if let Some(r) = self.slow_call_rate {
            rule(
                errors,
                "slow_call_rate",
                r.1,
                resilience_rules::slow_call_rate(self.slow_call_duration.map(|d| d.duration())),
            );
        }
        if let Some(h) = self.half_open_max_calls {
            rule(errors, "half_open_max_calls", h.span, resilience_rules::half_open_max_calls(h.value as u32));
        }
        if let (Some(s), Some(h)) = (self.success_threshold, self.half_open_max_calls) {
            if s.value > h.value {
                errors.push(
                    darling::Error::custom(format!(
                        "`success_threshold` of {} can never be reached with `half_open_max_calls` of {}",
                        s.value, h.value
                    ))
                    .with_span(&s.span),
                );
            }
        }
    }
}

/// Reports a shared rule's refusal of `key`'s value, spanned at the value.
fn rule(
    errors: &mut darling::error::Accumulator,
    key: &str,
    span: proc_macro2::Span,
    verdict: resilience_rules::Verdict,
) {
    if let Err(message) = verdict {
        errors.push(darling::Error::custom(format!("invalid `{key}`: {message}")).with_span(&span));
    }
}

impl RetryArgs {
    /// The shared rules on the keys given.
    fn validate(&self, errors: &mut darling::error::Accumulator) {
        if let Some(n) = self.max_attempts {
            rule(
                errors,
                "max_attempts",
                n.span,
                resilience_rules::max_attempts(n.value.min(u64::from(u32::MAX)) as u32),
            );
        }
        if let Some(f) = self.exponential_base {
            rule(errors, "exponential_base", f.1, resilience_rules::exponential_base(f.0));
        }
        if let Some(base) = self.base_delay {
            // No preset changes `max_delay`: the runtime's default stands in for it.
            let max = self.max_delay.map_or(resilience_rules::DEFAULT_MAX_DELAY, |d| d.duration());
            rule(errors, "base_delay", base.span, resilience_rules::delays(base.duration(), max));
        }
        if let Some(b) = &self.budget {
            if let Some(r) = b.ratio {
                rule(errors, "ratio", r.1, resilience_rules::budget_ratio(r.0));
            }
            if let Some(n) = b.min_per_second {
                let whole = n.0 >= 0.0 && n.0.fract() == 0.0 && n.0 <= f64::from(u32::MAX);
                let verdict = if whole { Ok(()) } else { Err(format!("{} is not a whole number of retries", n.0)) };
                rule(errors, "min_per_second", n.1, verdict);
            }
            if let Some(w) = b.window {
                rule(errors, "window", w.span, resilience_rules::budget_window(w.duration()));
            }
        }
    }
}

impl RateLimitArgs {
    /// The shared rules on the keys given.
    fn validate(&self, errors: &mut darling::error::Accumulator) {
        if let Some(r) = self.rate {
            rule(errors, "rate", r.1, resilience_rules::rate(r.0));
        }
        if let (Some(key), Some(true)) = (&self.key, self.shared) {
            errors.push(
                darling::Error::custom(
                    "a shared limit is the dependency's, one for every instance: `key` limits are per call site \
                     and stay in the process; drop `shared` or `key`",
                )
                .with_span(&key.0),
            );
        }
        if let (Some(key), None) = (&self.key, self.rate) {
            errors.push(
                darling::Error::custom("`key` needs `rate`: the calls per second each value may make")
                    .with_span(&key.0),
            );
        }
    }
}

impl ConfigArgs {
    /// The call site's `rate_limit(key = …)`, if given (the limit of each value:
    /// `CallSite::with_key_limit` arguments).
    pub(crate) fn key_limit(&self) -> Option<KeyLimit> {
        let r = self.rate_limit.as_ref()?;
        let argument = r.key.as_ref()?.0.clone();
        let rate = float(r.rate.map_or(1.0, |n| n.0));
        let burst = r.burst.map_or_else(|| quote!(::resilience::__private::nz32(1)), |p| p.u32_tokens());
        let max_keys =
            r.max_keys.map_or_else(|| quote!(::resilience::__private::nzusize(10_000)), |p| p.usize_tokens());
        Some(KeyLimit { argument, tokens: quote!(#rate, #burst, #max_keys) })
    }

    /// The span of `key = …` inside `rate_limit(...)`, if given (registrations refuse it).
    pub(crate) fn key_span(&self) -> Option<proc_macro2::Span> {
        self.rate_limit.as_ref()?.key.as_ref().map(|k| k.0.span())
    }
}

impl RetryArgs {
    fn tokens(&self) -> TokenStream {
        let enabled = opt(&self.enabled, |b| quote!(#b));
        let max_attempts = opt(&self.max_attempts, |p| p.u32_tokens());
        let base_delay = opt(&self.base_delay, dur);
        let exponential_base = opt(&self.exponential_base, |n| float(n.0));
        let max_delay = opt(&self.max_delay, dur);
        let jitter = opt(&self.jitter, |j| {
            let v = &j.0;
            quote!(::resilience::__private::Jitter::#v)
        });
        let max_elapsed = opt(&self.max_elapsed, dur);
        let budget = opt(&self.budget, |b| {
            let ratio = opt(&b.ratio, |n| float(n.0));
            let min_per_second = opt(&b.min_per_second, |n| {
                let v = n.0 as u32;
                quote!(#v)
            });
            let window = opt(&b.window, dur);
            quote!(::resilience::__private::BudgetOverrides {
                ratio: #ratio,
                min_per_second: #min_per_second,
                window: #window,
            })
        });
        quote!(::resilience::__private::RetryOverrides {
            enabled: #enabled,
            max_attempts: #max_attempts,
            base_delay: #base_delay,
            exponential_base: #exponential_base,
            max_delay: #max_delay,
            jitter: #jitter,
            max_elapsed: #max_elapsed,
            budget: #budget,
        })
    }
}

fn bulkhead_tokens(
    enabled: Option<bool>,
    kind: Option<&KindArg>,
    max_concurrent: Option<Positive>,
    max_wait: Option<DurationArg>,
    queue_capacity: Option<Number>,
    limits: (Option<Positive>, Option<Positive>),
) -> TokenStream {
    let enabled = opt(&enabled, |b| quote!(#b));
    let kind = opt(&kind, |k| {
        let v = &k.0;
        quote!(::resilience::__private::BulkheadKind::#v)
    });
    let max_concurrent = opt(&max_concurrent, |p| p.usize_tokens());
    let max_wait = opt(&max_wait, dur);
    let queue_capacity = opt(&queue_capacity, |n| {
        let v = n.0 as usize;
        quote!(#v)
    });
    let min_limit = opt(&limits.0, |p| p.usize_tokens());
    let max_limit = opt(&limits.1, |p| p.usize_tokens());
    quote!(::resilience::__private::BulkheadOverrides {
        enabled: #enabled,
        kind: #kind,
        max_concurrent: #max_concurrent,
        max_wait: #max_wait,
        queue_capacity: #queue_capacity,
        min_limit: #min_limit,
        max_limit: #max_limit,
    })
}

impl ConfigArgs {
    /// Checks rules across keys, then builds the `ConfigOverrides` expression.
    pub(crate) fn tokens(&self, preset_threshold: Option<u32>) -> darling::Result<TokenStream> {
        self.tokens_switching_off(false, preset_threshold)
    }

    /// Like [`tokens`](Self::tokens); with `only_given`, every policy whose group is
    /// not given is switched off (`#[resilience_pattern]`: its keys name every policy).
    ///
    /// `preset_threshold` is the failure threshold of the preset the call site's keys go
    /// over, when the macro knows it (a window given alone must hold it).
    pub(crate) fn tokens_switching_off(
        &self,
        only_given: bool,
        preset_threshold: Option<u32>,
    ) -> darling::Result<TokenStream> {
        let mut errors = darling::Error::accumulator();
        if let Some(b) = &self.circuit_breaker {
            b.validate(&mut errors, preset_threshold);
        }
        if let Some(r) = &self.retry {
            r.validate(&mut errors);
        }
        if let Some(r) = &self.rate_limit {
            r.validate(&mut errors);
        }
        if let Some(h) = &self.hedge {
            if let Some(n) = h.max_attempts {
                rule(
                    &mut errors,
                    "max_attempts",
                    n.span,
                    resilience_rules::hedge_attempts(n.value.min(u64::from(u32::MAX)) as u32),
                );
            }
            if let Some(HedgeDelayArg::Percentile(p, span)) = h.delay {
                rule(&mut errors, "delay", span, resilience_rules::hedge_percentile(p));
            }
        }
        if let Some(c) = &self.chaos {
            for (key, rate) in [("latency_rate", c.latency_rate), ("error_rate", c.error_rate)] {
                if let Some(r) = rate {
                    rule(&mut errors, key, r.1, resilience_rules::fraction(r.0));
                }
            }
            if let Some(seed) = c.seed {
                let whole = seed.0 >= 0.0 && seed.0.fract() == 0.0 && seed.0 < 2f64.powi(53);
                let verdict = if whole { Ok(()) } else { Err(format!("{} is not a whole number below 2^53", seed.0)) };
                rule(&mut errors, "seed", seed.1, verdict);
            }
        }
        let group = self.bulkhead.as_ref();
        if let Some(n) = group.and_then(|g| g.max_concurrent).or(self.max_concurrent) {
            let thread_pool = matches!(
                group.and_then(|g| g.kind.as_ref()).or(self.kind.as_ref()),
                Some(k) if k.0 == "ThreadPool"
            );
            let limit = if thread_pool {
                resilience_rules::workers(n.value as usize)
            } else {
                resilience_rules::permits(n.value as usize)
            };
            rule(&mut errors, "max_concurrent", n.span, limit);
        }
        let adaptive = matches!(
            group.and_then(|g| g.kind.as_ref()).or(self.kind.as_ref()),
            Some(k) if k.0 == "Adaptive"
        );
        if adaptive {
            // The keys not given take the adaptive bulkhead's defaults.
            let start = group.and_then(|g| g.max_concurrent).or(self.max_concurrent);
            let (min, max) = (group.and_then(|g| g.min_limit), group.and_then(|g| g.max_limit));
            let value = |p: Option<Positive>, default: usize| p.map_or(default, |p| p.value as usize);
            if let Err((key, message)) = resilience_rules::adaptive_limits(
                value(min, resilience_rules::DEFAULT_MIN_LIMIT),
                value(start, resilience_rules::DEFAULT_ADAPTIVE_LIMIT),
                value(max, resilience_rules::DEFAULT_MAX_LIMIT),
            ) {
                let span = match key {
                    "min_limit" => min.map(|p| p.span),
                    "max_limit" => max.map(|p| p.span),
                    _ => start.map(|p| p.span),
                };
                let span = span.or(min.map(|p| p.span)).or(max.map(|p| p.span)).or(start.map(|p| p.span));
                if let Some(span) = span {
                    rule(&mut errors, key, span, Err(message));
                }
            }
        } else if let Some(p) = group.and_then(|g| g.min_limit.or(g.max_limit)) {
            if group.and_then(|g| g.kind.as_ref()).or(self.kind.as_ref()).is_some() {
                errors.push(
                    darling::Error::custom("`min_limit` and `max_limit` bound an adaptive bulkhead: `kind = adaptive`")
                        .with_span(&p.span),
                );
            }
        }
        if let Some(t) = self.timeout {
            if t.is_zero() {
                errors.push(darling::Error::custom("`timeout` must be greater than zero").with_span(&t.span));
            }
        }
        errors.finish()?;
        let timeout = opt(&self.timeout, dur);
        let off = |group: TokenStream| {
            if only_given {
                quote!(#group { enabled: ::core::option::Option::Some(false), ..#group::EMPTY })
            } else {
                quote!(#group::EMPTY)
            }
        };
        let breaker = self
            .circuit_breaker
            .as_ref()
            .map_or_else(|| off(quote!(::resilience::__private::BreakerOverrides)), BreakerArgs::tokens);
        let retry =
            self.retry.as_ref().map_or_else(|| off(quote!(::resilience::__private::RetryOverrides)), RetryArgs::tokens);
        // Flat keys, then the `bulkhead(...)` group (the group wins where both are given).
        let group = self.bulkhead.as_ref();
        let flat = self.kind.is_some() || self.max_concurrent.is_some() || self.max_wait.is_some();
        let switched_off = only_given && group.is_none() && !flat;
        let bulkhead = bulkhead_tokens(
            group.and_then(|g| g.enabled).or(switched_off.then_some(false)),
            group.and_then(|g| g.kind.as_ref()).or(self.kind.as_ref()),
            group.and_then(|g| g.max_concurrent).or(self.max_concurrent),
            group.and_then(|g| g.max_wait).or(self.max_wait),
            group.and_then(|g| g.queue_capacity).or(self.queue_capacity),
            (group.and_then(|g| g.min_limit), group.and_then(|g| g.max_limit)),
        );
        let rate_limit = match &self.rate_limit {
            None => quote!(::resilience::__private::RateLimitOverrides::EMPTY),
            // With `key`, the limit is the call site's own, per value: the dependency's
            // shared limiter is left as configured elsewhere.
            Some(r) if r.key.is_some() => quote!(::resilience::__private::RateLimitOverrides::EMPTY),
            Some(r) => {
                let rate = opt(&r.rate, |n| float(n.0));
                let burst = opt(&r.burst, |p| p.u32_tokens());
                let max_keys = opt(&r.max_keys, |p| p.usize_tokens());
                let shared = opt(&r.shared, |b| quote!(#b));
                quote!(::resilience::__private::RateLimitOverrides {
                    rate: #rate,
                    burst: #burst,
                    max_keys: #max_keys,
                    shared: #shared,
                })
            }
        };
        let hedge = opt(&self.hedge, |h| {
            let max_attempts = opt(&h.max_attempts, |p| p.u32_tokens());
            let delay = opt(&h.delay, |d| match d {
                HedgeDelayArg::After(d) => {
                    let d = dur(d);
                    quote!(::resilience::__private::HedgeDelay::After(#d))
                }
                HedgeDelayArg::Percentile(p, _) => quote!(::resilience::__private::HedgeDelay::Percentile(#p)),
            });
            quote!(::resilience::__private::HedgeOverrides { max_attempts: #max_attempts, delay: #delay })
        });
        let chaos = opt(&self.chaos, |c| {
            let latency = opt(&c.latency, dur);
            let latency_rate = opt(&c.latency_rate, |n| float(n.0));
            let error_rate = opt(&c.error_rate, |n| float(n.0));
            let every = opt(&c.every, |p| p.u32_tokens());
            let max_active = opt(&c.max_active, |p| p.usize_tokens());
            let seed = opt(&c.seed, |n| {
                let v = n.0 as u64;
                quote!(#v)
            });
            quote!(::resilience::__private::ChaosOverrides {
                latency: #latency,
                latency_rate: #latency_rate,
                error_rate: #error_rate,
                every: #every,
                max_active: #max_active,
                seed: #seed,
            })
        });
        Ok(quote!(::resilience::__private::ConfigOverrides {
            timeout: #timeout,
            circuit_breaker: #breaker,
            retry: #retry,
            bulkhead: #bulkhead,
            rate_limit: #rate_limit,
            hedge: #hedge,
            chaos: #chaos,
        }))
    }
}
