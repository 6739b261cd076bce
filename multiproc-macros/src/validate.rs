//! Checks that need the whole item. Every error is spanned on the offending token, and all of
//! them are gathered so that one build shows every problem.

use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ImplItemFn, ItemFn, ItemImpl, ReturnType, Signature, Type};

/// Collects errors, serde_derive's `Ctxt` in miniature.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Checks shared by the fn form and `run`: no generics, no `async`, no `unsafe`, no ABI, no
/// `impl Trait`.
fn check_signature(sig: &Signature, what: &str, errors: &mut Errors) {
    if let Some(token) = &sig.asyncness {
        errors.push(syn::Error::new_spanned(
            token,
            format!(
                "{what} cannot be `async`: a child process runs it to completion on its own \
                 thread; make it a plain `fn` (start a runtime inside it if it needs one)"
            ),
        ));
    }
    if let syn::Safety::Unsafe(token) = &sig.safety {
        errors.push(syn::Error::new_spanned(
            token,
            format!("{what} cannot be `unsafe`: wrap the unsafe call in a safe `fn`"),
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            format!("{what} cannot have an `extern` ABI"),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let span_of: &dyn quote::ToTokens = if sig.generics.params.is_empty() {
            &sig.generics.where_clause
        } else {
            &sig.generics
        };
        errors.push(syn::Error::new_spanned(
            span_of,
            format!(
                "{what} cannot be generic: the child looks it up by name, so every type must \
                 be known; write one concrete function per type"
            ),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            format!("{what} cannot be variadic"),
        ));
    }
    for input in &sig.inputs {
        if let FnArg::Typed(pat) = input {
            check_no_impl_trait(&pat.ty, what, errors);
        }
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        check_no_impl_trait(ty, what, errors);
    }
}

fn check_no_impl_trait(ty: &Type, what: &str, errors: &mut Errors) {
    if let Type::Reference(r) = ty {
        errors.push(syn::Error::new_spanned(
            r,
            format!(
                "{what} cannot take or return references: the other process cannot see this \
                 one's memory; use an owned type (`String` for `&str`, `Vec<T>` for `&[T]`)"
            ),
        ));
    }
    if let Type::ImplTrait(it) = ty {
        errors.push(syn::Error::new_spanned(
            it,
            format!(
                "{what} cannot use `impl Trait`: values cross a process boundary, so name a \
                 concrete `Serialize + Deserialize` type"
            ),
        ));
    }
}

/// The argument types of a validated free fn, in order.
pub(crate) fn process_fn(item: &ItemFn) -> syn::Result<Vec<Type>> {
    let mut errors = Errors::default();
    check_signature(&item.sig, "a `#[process]` function", &mut errors);
    let mut types = Vec::new();
    for input in &item.sig.inputs {
        match input {
            FnArg::Typed(pat) => types.push((*pat.ty).clone()),
            FnArg::Receiver(r) => errors.push(syn::Error::new_spanned(
                r,
                "a `#[process]` function cannot take `self`; put `#[process]` on the `impl` \
                 block and name the method `run`",
            )),
        }
    }
    errors.finish()?;
    Ok(types)
}

/// The `run` method of a validated `impl` block.
pub(crate) fn process_impl(item: &ItemImpl) -> syn::Result<&ImplItemFn> {
    let mut errors = Errors::default();
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &item.generics,
            "a `#[process]` impl block cannot be generic: the child looks the type up by \
             name, so it must be concrete; write `impl MyType<u32>` for each type you spawn",
        ));
    }
    if let Some((path, _)) = &item.trait_ {
        errors.push(syn::Error::new_spanned(
            path,
            "`#[process]` goes on an inherent `impl` block (`impl MyType { fn run(self) .. }`), \
             not on a trait impl",
        ));
        return Err(errors.finish().expect_err("an error was pushed"));
    }
    if let Some(token) = &item.unsafety {
        errors.push(syn::Error::new_spanned(
            token,
            "a `#[process]` impl block cannot be `unsafe`",
        ));
    }
    let run = item.items.iter().find_map(|i| match i {
        ImplItem::Fn(f) if f.sig.ident == "run" => Some(f),
        _ => None,
    });
    let Some(run) = run else {
        errors.push(syn::Error::new_spanned(
            &item.self_ty,
            "a `#[process]` impl block needs a `fn run(self) -> T` method: the code the child \
             process runs",
        ));
        return Err(errors.finish().expect_err("an error was pushed"));
    };
    check_signature(&run.sig, "`run`", &mut errors);
    let mut inputs = run.sig.inputs.iter();
    let by_value = "`run` must take `self` by value: the child process owns its state; write \
                    `fn run(self)`";
    match inputs.next() {
        Some(FnArg::Receiver(r)) => match &r.kind {
            syn::ReceiverKind::Value => {}
            syn::ReceiverKind::Reference(..) => {
                errors.push(syn::Error::new_spanned(r, by_value));
            }
            syn::ReceiverKind::Typed(_, ty) => {
                let is_self = matches!(&**ty, Type::Path(p) if p.path.is_ident("Self"));
                if !is_self {
                    errors.push(syn::Error::new_spanned(ty, by_value));
                }
            }
            _ => errors.push(syn::Error::new_spanned(r, by_value)),
        },
        Some(FnArg::Typed(t)) => errors.push(syn::Error::new_spanned(
            t,
            "`run` must take `self` by value as its only parameter; write `fn run(self)`",
        )),
        None => errors.push(syn::Error::new(run.sig.paren_token.span.join(), by_value)),
    }
    let extra: Vec<_> = inputs.collect();
    if let Some(first) = extra.first() {
        errors.push(syn::Error::new(
            first.span(),
            "`run` takes no parameters besides `self`: put what it needs in the struct's \
             fields",
        ));
    }
    errors.finish()?;
    Ok(run)
}

/// Checks for `#[multiproc::main]` and `#[multiproc::test]`.
pub(crate) fn hook_fn(item: &ItemFn, attr: &str, is_main: bool) -> syn::Result<()> {
    let mut errors = Errors::default();
    if let Some(token) = &item.sig.asyncness {
        let fix = if is_main {
            "the hook must run before the async runtime starts: put `#[multiproc::main]` \
             below `#[tokio::main]` (the runtime attribute goes first), or call \
             `multiproc::init()` first in a plain `fn main`"
        } else {
            "make it a plain `fn` and start the runtime inside it"
        };
        errors.push(syn::Error::new_spanned(
            token,
            format!("`#[{attr}]` does not go on an `async fn`: {fix}"),
        ));
    }
    if !item.sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &item.sig.generics,
            format!("`#[{attr}]` cannot go on a generic function"),
        ));
    }
    errors.finish()
}
