//! `register_database_dependency!("user_db", max_concurrent = 10)` and its siblings.

use darling::ast::NestedMeta;
use darling::FromMeta;
use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{LitStr, Token};

use crate::args::ConfigArgs;
use crate::keys;
use crate::value::compile_errors;

struct Input {
    name: LitStr,
    keys: Vec<NestedMeta>,
}

impl Parse for Input {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let name: LitStr = input.parse().map_err(|e| {
            syn::Error::new(e.span(), "expected the dependency's name as a string literal, such as \"user_db\"")
        })?;
        let mut keys = Vec::new();
        if input.parse::<Option<Token![,]>>()?.is_some() {
            keys = Punctuated::<NestedMeta, Token![,]>::parse_terminated(input)?.into_iter().collect();
        }
        Ok(Self { name, keys })
    }
}

/// Expands a registration of type `dependency_type` (a `DependencyType` variant name)
/// by the macro `site` (for messages).
pub(crate) fn expand(input: TokenStream, dependency_type: &str, site: &str) -> TokenStream {
    let input: Input = match syn::parse2(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    if input.name.value().trim().is_empty() {
        return syn::Error::new(input.name.span(), "the dependency's name must not be empty").to_compile_error();
    }
    let mut errors = darling::Error::accumulator();
    let keys = keys::check(input.keys, &[], site, &mut errors);
    let args = errors.handle(ConfigArgs::from_list(&keys));
    if let Some(span) = args.as_ref().and_then(ConfigArgs::key_span) {
        let message = "`key` is for the attributes, where the function's arguments are: a registration \
                       configures the dependency's one shared limit";
        errors.push(darling::Error::custom(message).with_span(&span));
    }
    let preset_threshold = resilience_rules::type_failure_threshold(dependency_type);
    let overrides = args.and_then(|a| errors.handle(a.tokens(preset_threshold)));
    let overrides = match (errors.finish(), overrides) {
        (Ok(()), Some(t)) => t,
        (Err(e), _) => return compile_errors(e),
        (Ok(()), None) => return TokenStream::new(),
    };
    let name = &input.name;
    let ty = syn::Ident::new(dependency_type, proc_macro2::Span::call_site());
    quote!(::resilience::__private::register(
        #name,
        ::resilience::__private::DependencyType::#ty,
        #overrides,
    ))
}
