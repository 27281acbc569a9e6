//! Values of keys: durations and positive counts, checked at expansion time.

use darling::FromMeta;
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit};

/// A duration written as a string with a unit: `"250ms"`, `"30s"`, `"5m"`, `"1h"`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DurationArg {
    pub(crate) nanos: u64,
    pub(crate) span: Span,
}

/// Parses `250ms`, `30s`, `1.5s`, `5m`, `1h`. The same rules as the settings file's
/// (this crate cannot depend on the runtime, so the dozen lines live in both).
fn parse_duration(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    };
    let nanos = value * scale;
    (nanos.is_finite() && nanos >= 0.0 && nanos < u64::MAX as f64).then_some(nanos as u64)
}

impl FromMeta for DurationArg {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        match expr {
            Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => match parse_duration(&s.value()) {
                Some(nanos) => Ok(Self { nanos, span: s.span() }),
                None => Err(darling::Error::custom(format!(
                    "must be a number and a unit such as \"250ms\", \"30s\", \"5m\" or \"1h\", not \"{}\"",
                    s.value()
                ))
                .with_span(s)),
            },
            Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => {
                Err(darling::Error::custom(format!("needs a unit and quotes, such as \"{}s\"", i.base10_digits()))
                    .with_span(i))
            }
            other => Err(darling::Error::custom("must be a duration such as \"30s\"").with_span(other)),
        }
    }
}

impl DurationArg {
    /// The duration written.
    pub(crate) fn duration(self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.nanos)
    }

    pub(crate) fn tokens(self) -> TokenStream {
        let nanos = self.nanos;
        quote!(::resilience::__private::Duration::from_nanos(#nanos))
    }

    pub(crate) fn is_zero(self) -> bool {
        self.nanos == 0
    }
}

/// A whole number of at least 1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Positive {
    pub(crate) value: u64,
    pub(crate) span: Span,
}

impl FromMeta for Positive {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        match expr {
            Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) if i.base10_digits().starts_with('-') => {
                Err(darling::Error::custom("must be at least 1").with_span(i))
            }
            Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => {
                let value: u64 = i.base10_parse().map_err(|e| darling::Error::custom(e).with_span(i))?;
                if value == 0 {
                    return Err(darling::Error::custom("must be at least 1").with_span(i));
                }
                if value > u64::from(u32::MAX) {
                    return Err(darling::Error::custom(format!("must be at most {}", u32::MAX)).with_span(i));
                }
                Ok(Self { value, span: i.span() })
            }
            Expr::Unary(u) => Err(darling::Error::custom("must be at least 1").with_span(u)),
            other => Err(darling::Error::custom("must be a whole number of at least 1").with_span(other)),
        }
    }
}

impl Positive {
    pub(crate) fn u32_tokens(self) -> TokenStream {
        let v = self.value as u32;
        quote!(::resilience::__private::nz32(#v))
    }

    pub(crate) fn usize_tokens(self) -> TokenStream {
        let v = self.value as usize;
        quote!(::resilience::__private::nzusize(#v))
    }
}

/// A percentage in (0, 100], and where it was written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Percent(pub(crate) f64, pub(crate) Span);

impl FromMeta for Percent {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        let value = match expr {
            Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => i.base10_parse::<f64>().ok(),
            Expr::Lit(ExprLit { lit: Lit::Float(f), .. }) => f.base10_parse::<f64>().ok(),
            _ => None,
        };
        match value {
            Some(p) if resilience_rules::percent(p).is_ok() => Ok(Self(p, expr.span())),
            _ => Err(darling::Error::custom("must be a percentage above 0 and at most 100").with_span(expr)),
        }
    }
}

/// A number (the retry delay factor, a rate), and where it was written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Number(pub(crate) f64, pub(crate) Span);

impl FromMeta for Number {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        match expr {
            Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => {
                Ok(Self(i.base10_parse().map_err(darling::Error::custom)?, expr.span()))
            }
            Expr::Lit(ExprLit { lit: Lit::Float(f), .. }) => {
                Ok(Self(f.base10_parse().map_err(darling::Error::custom)?, expr.span()))
            }
            other => Err(darling::Error::custom("must be a number").with_span(other)),
        }
    }
}

/// Turns darling's errors into compile errors in this crate's style: a message about a
/// value ("must be at least 1") names its key; darling's location suffix is dropped,
/// since every error is spanned at the offending token.
pub(crate) fn compile_errors(error: darling::Error) -> TokenStream {
    let mut out = TokenStream::new();
    for single in error.flatten() {
        let span = single.span();
        let text = single.to_string();
        let (message, key) = match text.rsplit_once(" at ") {
            Some((message, path)) if path.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c == '/') => {
                (message.to_owned(), path.rsplit('/').next().map(str::to_owned))
            }
            _ => (text, None),
        };
        let message = match key {
            Some(key) if message.starts_with("must ") || message.starts_with("needs ") => format!("`{key}` {message}"),
            _ => message,
        };
        out.extend(syn::Error::new(span, message).to_compile_error());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(250_000_000));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("1h"), Some(3_600_000_000_000));
        assert_eq!(parse_duration("30"), None);
        assert_eq!(parse_duration("3x"), None);
    }
}
