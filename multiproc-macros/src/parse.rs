//! Parsing: the attribute's arguments and the annotated item.

use proc_macro2::TokenStream;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Ident, LitStr, Path, Token};

/// `#[process(crate = "path")]`, and the same for `main` and `test`.
pub(crate) struct Args {
    /// The path generated code reaches the runtime through; `::multiproc` by default.
    pub(crate) krate: Path,
}

struct KeyValue {
    key: Ident,
    value: LitStr,
}

impl Parse for KeyValue {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = if input.peek(Token![crate]) {
            let kw: Token![crate] = input.parse()?;
            Ident::new("crate", kw.span)
        } else {
            input.parse()?
        };
        input.parse::<Token![=]>()?;
        let value = input.parse()?;
        Ok(KeyValue { key, value })
    }
}

impl Args {
    pub(crate) fn parse(attr: &str, tokens: TokenStream) -> syn::Result<Self> {
        let mut krate: Option<Path> = None;
        let pairs = syn::parse::Parser::parse2(
            Punctuated::<KeyValue, Token![,]>::parse_terminated,
            tokens,
        )?;
        let mut errors: Option<syn::Error> = None;
        let mut push = |e: syn::Error| match &mut errors {
            Some(all) => all.combine(e),
            None => errors = Some(e),
        };
        for pair in pairs {
            if pair.key == "crate" {
                if krate.is_some() {
                    push(syn::Error::new_spanned(
                        &pair.key,
                        format!("duplicate `crate` argument to `#[{attr}]`"),
                    ));
                    continue;
                }
                match pair.value.parse::<Path>() {
                    Ok(path) => krate = Some(path),
                    Err(_) => push(syn::Error::new_spanned(
                        &pair.value,
                        "`crate` takes a path, such as `crate = \"::multiproc\"`",
                    )),
                }
            } else {
                push(syn::Error::new_spanned(
                    &pair.key,
                    format!(
                        "unknown argument `{}` to `#[{attr}]`; the only argument is \
                         `crate = \"path\"`",
                        pair.key
                    ),
                ));
            }
        }
        if let Some(e) = errors {
            return Err(e);
        }
        Ok(Args {
            krate: krate.unwrap_or_else(|| syn::parse_quote!(::multiproc)),
        })
    }
}

/// What `#[process]` was put on.
pub(crate) enum ProcessItem {
    Fn(syn::ItemFn),
    Impl(syn::ItemImpl),
}

impl Parse for ProcessItem {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let item: syn::Item = input.parse()?;
        match item {
            syn::Item::Fn(f) => Ok(ProcessItem::Fn(f)),
            syn::Item::Impl(i) => Ok(ProcessItem::Impl(i)),
            other => Err(syn::Error::new_spanned(
                other,
                "`#[process]` goes on a free `fn` or on an `impl` block that holds \
                 `fn run(self)`",
            )),
        }
    }
}
