//! `#[resilient]`, `#[resilience_pattern]`, `#[database_call]` and its siblings: one
//! argument struct and one expansion path; the attributes differ only in the keys they
//! take and the preset they name.
//!
//! The body becomes a loop of attempts written into the function itself (see
//! `resilience_core::macro_support`), so each attempt borrows `&mut self` and the
//! arguments afresh: an attempt is the original block, in its own `async` block (or
//! closure, for a plain `fn`) so that `?` and `return` end the attempt, not the call.

use darling::ast::NestedMeta;
use darling::FromMeta;
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, PatIdent, ReturnType, Type};

use crate::args::{ConfigArgs, KeyLimit, NameArg, StrategyArg};
use crate::keys::{self, HANDLERS};
use crate::value::compile_errors;

/// Which attribute is expanding.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Attribute {
    Resilient,
    Pattern,
    /// `#[database_call]` & co.: the attribute's name and its `DependencyType` variant.
    Type(&'static str, &'static str),
}

impl Attribute {
    fn site(self) -> String {
        match self {
            Self::Resilient => "`#[resilient]`".to_owned(),
            Self::Pattern => "`#[resilience_pattern]`".to_owned(),
            Self::Type(name, _) => format!("`#[{name}]`"),
        }
    }

    fn own_keys(self) -> Vec<&'static str> {
        let own: &[&str] = match self {
            Self::Resilient => &["name", "strategy"],
            Self::Pattern => &["name"],
            Self::Type(..) => &["dependency", "operation"],
        };
        own.iter().chain(HANDLERS).copied().collect()
    }
}

/// Every key an attribute can take; [`keys::check`] has already refused the ones that
/// do not belong to the attribute at hand.
#[derive(Debug, Default, FromMeta)]
#[darling(default)]
struct AttributeArgs {
    name: Option<NameArg>,
    strategy: Option<StrategyArg>,
    dependency: Option<NameArg>,
    operation: Option<NameArg>,
    fallback: Option<syn::Path>,
    retry_if: Option<syn::Path>,
    record_if: Option<syn::Path>,
    /// `idempotent = true`: the call is safe to repeat, so its dependency's `hedge` applies.
    idempotent: Option<syn::LitBool>,
    #[darling(flatten)]
    config: ConfigArgs,
}

/// How an argument reaches each attempt.
enum Passing {
    /// Taken by value: held in an `Arg` (`holder`, named where the argument's type is,
    /// so that a type that is not `Clone` is reported there), cloned for each attempt
    /// but the last.
    Owned { pat: Box<Pat>, ty: Box<Type>, holder: syn::Ident },
    /// Taken by value, of a primitive type (`u64`, `bool`, …), which is `Copy`: used as
    /// it is, rebound for each attempt if declared `mut` (so an attempt's changes do
    /// not reach the next).
    Copied { mutable: bool },
    /// A `&mut` behind a pattern: reborrowed for each attempt.
    ReborrowedPattern { pat: Box<Pat>, ty: Box<Type> },
    /// A `&` behind a pattern: copied for each attempt.
    CopiedPattern { pat: Box<Pat>, ty: Box<Type> },
}

struct Argument {
    /// The name the function's signature now binds.
    ident: syn::Ident,
    passing: Passing,
}

/// Expands one attribute on `item`.
pub(crate) fn expand(attribute: Attribute, args: TokenStream, item: TokenStream) -> TokenStream {
    let site = attribute.site();
    let mut func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let message = format!("{site} goes on a `fn` or `async fn` with a body");
            let error = syn::Error::new(Span::call_site(), message).to_compile_error();
            return quote!(#error #item);
        }
    };
    let mut errors = darling::Error::accumulator();
    let metas = errors.handle(NestedMeta::parse_meta_list(args).map_err(darling::Error::from)).unwrap_or_default();
    let metas = keys::check(metas, &attribute.own_keys(), &site, &mut errors);
    let args = errors.handle(AttributeArgs::from_list(&metas));
    let pattern = matches!(attribute, Attribute::Pattern);
    let preset_threshold = match (attribute, &args) {
        (Attribute::Resilient, Some(a)) => resilience_rules::strategy_failure_threshold(
            &a.strategy.as_ref().map_or_else(|| String::from("InternalService"), |s| s.0.to_string()),
        ),
        (Attribute::Pattern, _) => Some(resilience_rules::GLOBAL_FAILURE_THRESHOLD),
        (Attribute::Type(_, ty), _) => resilience_rules::type_failure_threshold(ty),
        (Attribute::Resilient, None) => None,
    };
    let overrides = args.as_ref().and_then(|a| errors.handle(a.config.tokens_switching_off(pattern, preset_threshold)));
    let ret = return_type(&func.sig, &site, &mut errors);
    let arguments = arguments(&mut func.sig, &site, &mut errors);
    let key_limit = args.as_ref().and_then(|a| a.config.key_limit());
    if let Some(limit) = &key_limit {
        check_key_argument(&func.sig, &limit.argument, &mut errors);
    }
    if let Some(args) = &args {
        if let (Attribute::Type(name, _), None) = (attribute, &args.dependency) {
            let message = format!("{site} needs the dependency's name: `#[{name}(dependency = \"user_db\")]`");
            errors.push(darling::Error::custom(message).with_span(&Span::call_site()));
        }
        if let Some(flag) = args.idempotent.as_ref().filter(|f| f.value) {
            if func.sig.asyncness.is_none() {
                let message = "`idempotent = true` lets slow calls be hedged, which needs an `async fn`; \
                               a plain `fn` runs one attempt at a time";
                errors.push(darling::Error::custom(message).with_span(flag));
            } else if lends_mutably(&func.sig) {
                let message = "`idempotent = true` runs attempts side by side, and a `&mut` receiver or argument \
                               can be lent to only one of them";
                errors.push(darling::Error::custom(message).with_span(flag));
            }
        }
        for name in [&args.name, &args.dependency].into_iter().flatten() {
            if name.0.value().trim().is_empty() {
                errors.push(darling::Error::custom("the dependency's name must not be empty").with_span(&name.0));
            }
        }
    }
    let (args, overrides, ret) = match (errors.finish(), args, overrides, ret) {
        (Ok(()), Some(args), Some(overrides), Some(ret)) => (args, overrides, ret),
        (Err(e), ..) => {
            let errors = compile_errors(e);
            return quote!(#errors #item);
        }
        // Every path that leaves one of them `None` pushed an error.
        _ => return item,
    };
    let call_site = call_site(attribute, &args, &func, overrides, key_limit.as_ref());
    let body = body(&func, &args, &arguments, &ret, call_site, key_limit.as_ref());
    match syn::parse2::<syn::Block>(quote!({ #body })) {
        Ok(block) => *func.block = block,
        Err(e) => {
            let error = e.to_compile_error();
            return quote!(#error #item);
        }
    }
    func.into_token_stream()
}

/// The `Result` type the function returns, or an error at what it returns instead.
fn return_type(sig: &syn::Signature, site: &str, errors: &mut darling::error::Accumulator) -> Option<Type> {
    let expected = "`Result<T, E>` where `E: From<resilience::ResilienceError>`";
    match &sig.output {
        ReturnType::Default => {
            let message = format!("a function with {site} must return {expected}; `{}` returns `()`", sig.ident);
            errors.push(darling::Error::custom(message).with_span(&sig.ident));
            None
        }
        ReturnType::Type(_, ty) => {
            let is_result = match &**ty {
                Type::Path(p) => p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "Result"),
                _ => false,
            };
            if is_result {
                Some((**ty).clone())
            } else if sig.asyncness.is_none() && matches!(&**ty, Type::ImplTrait(_)) {
                let message = format!(
                    "a function with {site} must be an `async fn` returning {expected}, or a plain `fn` \
                     returning it; write `async fn {}(...) -> Result<T, E>` instead of returning a future",
                    sig.ident
                );
                errors.push(darling::Error::custom(message).with_span(ty));
                None
            } else {
                let message = format!("a function with {site} must return {expected}, not `{}`", pretty(ty));
                errors.push(darling::Error::custom(message).with_span(ty));
                None
            }
        }
    }
}

/// A type as the user would write it (tokens print with spaces around `::` and `<`).
fn pretty(ty: &Type) -> String {
    let mut text = ty.to_token_stream().to_string();
    for (spaced, tight) in
        [(" :: ", "::"), (":: ", "::"), (" <", "<"), ("< ", "<"), (" >", ">"), (" ,", ","), ("& ", "&")]
    {
        text = text.replace(spaced, tight);
    }
    text
}

/// How each argument reaches the attempts; renames pattern arguments (and drops `mut`
/// from those taken by value, which each attempt rebinds) in the signature.
fn arguments(sig: &mut syn::Signature, site: &str, errors: &mut darling::error::Accumulator) -> Vec<Argument> {
    if let Some(constness) = &sig.constness {
        errors.push(darling::Error::custom(format!("{site} cannot go on a `const fn`")).with_span(constness));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(darling::Error::custom(format!("{site} cannot go on a variadic function")).with_span(variadic));
    }
    let mut out = Vec::new();
    for (index, input) in sig.inputs.iter_mut().enumerate() {
        match input {
            FnArg::Receiver(receiver) => {
                let by_reference = receiver.reference.is_some() || matches!(&*receiver.ty, Type::Reference(_));
                if !by_reference {
                    let message = format!(
                        "{site} needs `&self` or `&mut self`: retries run the body again, which cannot take `self` by value"
                    );
                    errors.push(darling::Error::custom(message).with_span(&receiver.self_token));
                }
            }
            FnArg::Typed(typed) => {
                let reference = match &*typed.ty {
                    Type::Reference(r) => Some(r.mutability.is_some()),
                    _ => None,
                };
                let ty = typed.ty.clone();
                match (&mut *typed.pat, reference) {
                    (Pat::Ident(PatIdent { by_ref: None, subpat: None, .. }), Some(_)) => {}
                    (Pat::Ident(p @ PatIdent { by_ref: None, subpat: None, .. }), None) if is_primitive(&ty) => {
                        let mutable = p.mutability.take().is_some();
                        out.push(Argument { ident: p.ident.clone(), passing: Passing::Copied { mutable } });
                    }
                    (Pat::Ident(p @ PatIdent { by_ref: None, subpat: None, .. }), None) => {
                        let pat = Box::new(Pat::Ident(p.clone()));
                        p.mutability = None;
                        let holder = format_ident!("__resilience_held{}", index, span = ty.span());
                        out.push(Argument { ident: p.ident.clone(), passing: Passing::Owned { pat, ty, holder } });
                    }
                    (pat, reference) => {
                        let ident = format_ident!("__resilience_arg{}", index);
                        let original = Box::new(pat.clone());
                        *pat = Pat::Ident(PatIdent {
                            attrs: Vec::new(),
                            by_ref: None,
                            mutability: None,
                            ident: ident.clone(),
                            subpat: None,
                        });
                        let passing = match reference {
                            None => {
                                let holder = format_ident!("__resilience_held{}", index, span = ty.span());
                                Passing::Owned { pat: original, ty, holder }
                            }
                            Some(true) => Passing::ReborrowedPattern { pat: original, ty },
                            Some(false) => Passing::CopiedPattern { pat: original, ty },
                        };
                        out.push(Argument { ident, passing });
                    }
                }
            }
        }
    }
    out
}

/// Checks that `rate_limit(key = …)` names an argument of the function, by its own name.
fn check_key_argument(sig: &syn::Signature, key: &syn::Ident, errors: &mut darling::error::Accumulator) {
    let names: Vec<&syn::Ident> = sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(typed) => match &*typed.pat {
                Pat::Ident(p) if !p.ident.to_string().starts_with("__resilience_") => Some(&p.ident),
                _ => None,
            },
            FnArg::Receiver(_) => None,
        })
        .collect();
    if names.contains(&key) {
        return;
    }
    let message = if names.is_empty() {
        format!("`key = {key}` must name an argument of `{}`, which takes none by name", sig.ident)
    } else {
        let list = names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        match keys::closest(
            &key.to_string(),
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>().iter().map(String::as_str),
        ) {
            Some(near) => format!("`{}` has no argument `{key}`; did you mean `{near}`?", sig.ident),
            None => format!("`{}` has no argument `{key}`; `key` names one of: {list}", sig.ident),
        }
    };
    errors.push(darling::Error::custom(message).with_span(key));
}

/// The `static` call site: the name, the preset and the call-site keys, all constant.
fn call_site(
    attribute: Attribute,
    args: &AttributeArgs,
    func: &ItemFn,
    overrides: TokenStream,
    key_limit: Option<&KeyLimit>,
) -> TokenStream {
    let fn_name = func.sig.ident.to_string();
    let name = match args.name.as_ref().or(args.dependency.as_ref()) {
        Some(name) => name.0.to_token_stream(),
        None => quote!(::core::concat!(::core::module_path!(), "::", #fn_name)),
    };
    let kind = match attribute {
        Attribute::Resilient => {
            let strategy = args.strategy.as_ref().map_or_else(|| format_ident!("InternalService"), |s| s.0.clone());
            quote!(::resilience::__private::DependencyKind::Strategy(
                ::resilience::__private::ResilienceStrategy::#strategy
            ))
        }
        Attribute::Pattern => quote!(::resilience::__private::DependencyKind::Pattern),
        Attribute::Type(_, ty) => {
            let ty = format_ident!("{}", ty);
            quote!(::resilience::__private::DependencyKind::Type(::resilience::__private::DependencyType::#ty))
        }
    };
    let operation = args.operation.as_ref().map(|op| {
        let op = &op.0;
        quote!(.with_operation(#op))
    });
    let key_limit = key_limit.map(|limit| {
        let tokens = &limit.tokens;
        quote!(.with_key_limit(#tokens))
    });
    quote! {
        static __RESILIENCE_SITE: ::resilience::__private::CallSite =
            ::resilience::__private::CallSite::new(#name, #kind, #overrides) #operation #key_limit;
    }
}

/// Whether `ty` mentions `impl Trait`, which cannot be written in a `let`.
fn mentions_impl(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|t| match t {
            proc_macro2::TokenTree::Ident(i) => i == "impl",
            proc_macro2::TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(ty.to_token_stream())
}

/// The new body of the function.
fn body(
    func: &ItemFn,
    args: &AttributeArgs,
    arguments: &[Argument],
    ret: &Type,
    site: TokenStream,
    key_limit: Option<&KeyLimit>,
) -> TokenStream {
    let mixed = Span::mixed_site();
    let call = quote_spanned!(mixed=> __resilience_call);
    let last = quote_spanned!(mixed=> __resilience_last);
    let result = quote_spanned!(mixed=> __resilience_result);
    let admission = quote_spanned!(mixed=> __resilience_admission);
    let block = &func.block;
    let is_async = func.sig.asyncness.is_some();
    let typed = !mentions_impl(ret);
    let ret_annotation = typed.then(|| quote!(: #ret));
    // The error type, named where the user wrote it: a return type that does not fit is
    // one error there, and `retry_if`/`record_if` are checked against it (not the reverse).
    let error_type =
        typed.then(|| quote_spanned!(ret.span()=> ::<<#ret as ::resilience::__private::ResilientResult>::Error>));
    let from = quote_spanned!(ret.span()=> ::resilience::__private::CallError::from_resilience);
    // `rate_limit(key = …)`: the argument's value is checked once, before it is moved
    // into the attempts; a rejection is the call's result (and reaches a fallback).
    let verdict = quote_spanned!(mixed=> __resilience_key_verdict);
    let key_check = key_limit.map(|limit| {
        let argument = &limit.argument;
        quote_spanned!(argument.span()=> let #verdict = __RESILIENCE_SITE.check_key(&#argument);)
    });
    let gate = |run: TokenStream| -> TokenStream {
        if key_limit.is_none() {
            return run;
        }
        quote! {
            match #verdict {
                ::core::result::Result::Err(__resilience_limited) => ::core::result::Result::Err(#from(__resilience_limited)),
                ::core::result::Result::Ok(()) => #run,
            }
        }
    };

    let mut held = Vec::new();
    let mut per_attempt = Vec::new();
    for argument in arguments {
        let ident = &argument.ident;
        match &argument.passing {
            Passing::Copied { mutable: true } => per_attempt.push(quote!(let mut #ident = #ident;)),
            Passing::Copied { mutable: false } => {}
            Passing::Owned { pat, ty, holder } => {
                held.push(quote!(let mut #holder = ::resilience::__private::Arg::new(#ident);));
                per_attempt.push(
                    quote_spanned!(ty.span()=> let #pat = ::resilience::__private::Arg::next(&mut #holder, #last);),
                );
            }
            Passing::ReborrowedPattern { pat, ty } => {
                per_attempt.push(quote!(let #pat: #ty = &mut *#ident;));
            }
            Passing::CopiedPattern { pat, ty } => {
                per_attempt.push(quote!(let #pat: #ty = #ident;));
            }
        }
    }
    let fallback_args = ordered_fallback_args(func, arguments);

    let policy = match (&args.retry_if, &args.record_if) {
        (None, None) => quote!(::core::default::Default::default()),
        (retry_if, record_if) => {
            let always = quote!(::resilience::__private::always);
            let retry_if = retry_if.as_ref().map_or_else(|| always.clone(), |p| quote!(#p));
            let record_if = record_if.as_ref().map_or_else(|| always.clone(), |p| quote!(#p));
            quote!(::resilience::__private::ErrorPolicy { retry_if: #retry_if, record_if: #record_if })
        }
    };

    let finish = match &args.fallback {
        None => quote!(#result),
        Some(path) => {
            let error = quote_spanned!(mixed=> __resilience_error);
            let value = quote!(#path(#(#fallback_args,)* #error));
            let resolve = if is_async {
                quote! {{
                    use ::resilience::__private::FallbackFuture as _;
                    let __resilience_fallback = ::resilience::__private::FallbackValue(#value).resolve();
                    __resilience_fallback.await
                }}
            } else {
                value
            };
            quote! {
                match #result {
                    ::core::result::Result::Err(#error) => #resolve,
                    __resilience_ok => __resilience_ok,
                }
            }
        }
    };
    if !is_async || !lends_mutably(&func.sig) {
        // A closure making each attempt: for an async fn it returns the attempt's future
        // and the pipeline's own future drives it; for a plain fn it runs the attempt.
        let last_param = quote_spanned!(mixed=> __resilience_last_attempt);
        // Without a fallback the closure owns what it passes on; with one, it borrows the
        // held arguments, which the fallback gets back afterwards.
        let (outside, inside, capture) = match &args.fallback {
            None => (None, Some(&held), Some(quote!(move))),
            Some(_) => (Some(&held), None, None),
        };
        let inside = inside.into_iter().flatten();
        let outside = outside.into_iter().flatten();
        let (param, last_binding) = match (held.is_empty(), args.fallback.is_some()) {
            (true, _) => (quote!(_), None),
            (false, true) => (quote!(_), Some(quote!(let #last = false;))),
            (false, false) => (last_param.clone(), Some(quote!(let #last = #last_param;))),
        };
        // `return` and `?` in the body end the attempt: the attempt is an `async move`
        // block, or for a plain fn the closure itself (with the return type written).
        let (execute, error_args, make_attempt, wrap, closure_ret, await_) = if is_async {
            let attempt = quote! {
                async move {
                    let __resilience_out #ret_annotation = #block;
                    __resilience_out
                }
            };
            let idempotent = args.idempotent.as_ref().is_some_and(|f| f.value);
            (
                if idempotent { quote!(execute_idempotent) } else { quote!(execute) },
                quote!(_, _),
                attempt,
                quote!(::resilience::__private::Attempts),
                None,
                Some(quote!(.await)),
            )
        } else {
            (quote!(execute_blocking), quote!(_), quote!(#block), quote!(), typed.then(|| quote!(-> #ret)), None)
        };
        let execute_error = typed.then(
            || quote_spanned!(ret.span()=> ::<_, <#ret as ::resilience::__private::ResilientResult>::Error, #error_args>),
        );
        // A plain fn taking everything by value may run each attempt on the dependency's
        // thread pool (on-time timeouts), when its types allow: see `__private::Detach`.
        let owned = func.sig.inputs.iter().all(|input| match input {
            FnArg::Receiver(_) => false,
            FnArg::Typed(t) => !matches!(&*t.ty, Type::Reference(_)) && !mentions_impl(&t.ty),
        });
        let run = if !is_async && typed && owned {
            let attempts = quote_spanned!(mixed=> __resilience_attempts);
            let arg_types = func.sig.inputs.iter().filter_map(|input| match input {
                FnArg::Typed(t) => Some(&t.ty),
                FnArg::Receiver(_) => None,
            });
            gate(quote! {{
                use ::resilience::__private::{DetachedAttempts as _, InPlaceAttempts as _};
                let __resilience_kind =
                    (&::resilience::__private::Probe::<(#(#arg_types,)*), #ret>::NEW).detach_kind();
                let #attempts = ::resilience::__private::Detach({
                    #(#inside)*
                    #capture |#param: bool| {
                        #last_binding
                        #(#per_attempt)*
                        move || -> #ret #block
                    }
                });
                __resilience_kind.run(&__RESILIENCE_SITE, #policy, #from, #attempts)
            }})
        } else {
            gate(quote! {
            ::resilience::__private::#execute #execute_error (
                &__RESILIENCE_SITE,
                #policy,
                #from,
                #wrap({
                    #(#inside)*
                    #capture |#param: bool| #closure_ret {
                        #last_binding
                        #(#per_attempt)*
                        #make_attempt
                    }
                }),
            )
            #await_
            })
        };
        return quote! {
            #site
            #key_check
            #(#outside)*
            let #result #ret_annotation = #run;
            #finish
        };
    }
    // `&mut self` or a `&mut` argument in an async fn: a loop of attempts, each the
    // function's own block borrowing afresh.
    let start = quote!(::resilience::__private::Call #error_type ::new(&__RESILIENCE_SITE, #policy, #from));
    let last_value = if args.fallback.is_some() { quote!(false) } else { quote!(!#call.may_retry()) };
    let last_binding = (!held.is_empty()).then(|| quote!(let #last = #last_value;));
    let run = gate(quote! {
        loop {
            let #admission = match #call.admit().await {
                ::core::result::Result::Ok(__resilience_admitted) => __resilience_admitted,
                ::core::result::Result::Err(__resilience_rejected) => break ::core::result::Result::Err(__resilience_rejected),
            };
            #last_binding
            #(#per_attempt)*
            let __resilience_attempt = async {
                let __resilience_out #ret_annotation = #block;
                __resilience_out
            };
            if let ::core::option::Option::Some(__resilience_done) =
                #call.attempt(#admission, __resilience_attempt).await
            {
                break __resilience_done;
            }
        }
    });
    quote! {
        #site
        #key_check
        #(#held)*
        let mut #call = #start;
        let #result #ret_annotation = #run;
        #finish
    }
}

/// Whether `ty` is a primitive type, written as such: `Copy`, and cheaper to copy than
/// to hold for retries.
fn is_primitive(ty: &Type) -> bool {
    const PRIMITIVES: &[&str] = &[
        "bool", "char", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f32",
        "f64",
    ];
    match ty {
        Type::Path(p) if p.qself.is_none() => {
            p.path.get_ident().is_some_and(|i| PRIMITIVES.contains(&i.to_string().as_str()))
        }
        _ => false,
    }
}

/// Whether the function takes `&mut self` or a `&mut` argument, which a closure making
/// attempts could not lend to each of them.
fn lends_mutably(sig: &syn::Signature) -> bool {
    let mutable_reference = |ty: &Type| matches!(ty, Type::Reference(r) if r.mutability.is_some());
    sig.inputs.iter().any(|input| match input {
        FnArg::Receiver(r) => (r.reference.is_some() && r.mutability.is_some()) || mutable_reference(&r.ty),
        FnArg::Typed(t) => mutable_reference(&t.ty),
    })
}

/// The fallback's arguments in the order of the signature: `self`, then each argument
/// (the held value of one taken by value).
fn ordered_fallback_args(func: &ItemFn, arguments: &[Argument]) -> Vec<TokenStream> {
    let mut out = Vec::new();
    for input in &func.sig.inputs {
        match input {
            FnArg::Receiver(_) => out.push(quote!(self)),
            FnArg::Typed(typed) => {
                let Pat::Ident(p) = &*typed.pat else { continue };
                let passing = arguments.iter().find(|a| a.ident == p.ident).map(|a| &a.passing);
                match passing {
                    Some(Passing::Owned { holder, .. }) => out.push(quote!(#holder.into_inner())),
                    _ => {
                        let ident = &p.ident;
                        out.push(quote!(#ident));
                    }
                }
            }
        }
    }
    out
}
