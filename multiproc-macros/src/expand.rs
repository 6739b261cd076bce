//! Code generation. Validity is decided in `validate`; on any error the user's item is emitted
//! unchanged beside the `compile_error!`s, so IDEs and call sites keep working.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, ItemFn, ItemImpl, Path, ReturnType, Type};

use crate::parse::{Args, ProcessItem};
use crate::validate;

/// The user's tokens plus the errors: keeps the item usable while the errors are fixed.
fn with_errors(item: TokenStream, error: syn::Error) -> TokenStream {
    let errors = error.into_compile_error();
    quote! { #item #errors }
}

pub(crate) fn process(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = match Args::parse("process", args) {
        Ok(args) => args,
        Err(e) => return with_errors(item, e),
    };
    let parsed = match syn::parse2::<ProcessItem>(item.clone()) {
        Ok(parsed) => parsed,
        Err(e) => return with_errors(item, e),
    };
    let expanded = match &parsed {
        ProcessItem::Fn(f) => validate::process_fn(f)
            .map(|types| process_fn(&args.krate, f, &types))
            .map_err(|e| with_errors(item.clone(), e)),
        ProcessItem::Impl(i) => validate::process_impl(i)
            .map(|run| process_impl(&args.krate, i, &run.sig.output))
            .map_err(|e| {
                // One error for one mistake: with a stand-in `Process` impl, a later
                // `.spawn()` on the type is not a second error ("no method named `spawn`").
                let stand_in = stand_in_process(&args.krate, i);
                let errors = e.into_compile_error();
                quote! { #item #stand_in #errors }
            }),
    };
    match expanded {
        Ok(tokens) => tokens,
        Err(e) => e,
    }
}

/// A `Process` impl for a `#[process]` impl block that has an error (already reported): its
/// `run`'s return type if it has a `run`, and a body that never runs (the build fails).
fn stand_in_process(krate: &Path, item: &ItemImpl) -> TokenStream {
    if !item.generics.params.is_empty() || item.trait_.is_some() {
        return TokenStream::new();
    }
    let self_ty = &item.self_ty;
    let ret = item
        .items
        .iter()
        .find_map(|i| match i {
            syn::ImplItem::Fn(f) if f.sig.ident == "run" => Some(&f.sig.output),
            _ => None,
        })
        .map_or_else(
            || syn::parse_quote!(()),
            |out| replace_self(output_type(out), self_ty),
        );
    quote! {
        impl #krate::__private::Process for #self_ty {
            type Output = #ret;
            const __KEY: &'static str = "";
            fn __run(self) -> #ret {
                ::core::unreachable!()
            }
        }
    }
}

/// The item's `#[cfg]`s, repeated on every item generated beside it.
fn cfg_attrs(attrs: &[syn::Attribute]) -> Vec<&syn::Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("cfg")).collect()
}

/// The return type, `()` when none is written.
fn output_type(output: &ReturnType) -> Type {
    match output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    }
}

/// Compile-time checks that `ty` can cross processes, spanned on `ty` itself so that the error
/// points at the offending type.
fn assert_transferable(krate: &Path, ty: &Type) -> TokenStream {
    quote_spanned! {ty.span()=>
        #krate::__private::assert_transferable::<#ty>();
    }
}

fn process_fn(krate: &Path, item: &ItemFn, arg_types: &[Type]) -> TokenStream {
    let name = &item.sig.ident;
    let name_str = name.to_string();
    let cfg_attrs = cfg_attrs(&item.attrs);
    let ret = output_type(&item.sig.output);
    // Spanned at the macro's definition site for locals, so user items named `ctx` or
    // `__arg0` in scope cannot capture them.
    let arg_names: Vec<_> = (0..arg_types.len())
        .map(|i| Ident::new(&format!("__arg{i}"), Span::mixed_site()))
        .collect();
    let ctx = Ident::new("ctx", Span::mixed_site());
    let checks = arg_types
        .iter()
        .chain(std::iter::once(&ret))
        .map(|ty| assert_transferable(krate, ty));

    // The function stays as written. `spawn` finds its entry by the type name of the fn item
    // (its full path, enclosing fns included), registered here as `fn_type`.
    quote! {
        #item

        #(#cfg_attrs)*
        const _: () = {
            #(#checks)*

            fn __multiproc_fn_type() -> &'static str {
                ::core::any::type_name_of_val(&#name)
            }

            // Through the probe: a type that cannot cross is reported once, by the check
            // above, not again here.
            #[allow(unused_imports)]
            use #krate::__private::{Checked as _, Unchecked as _};

            fn __multiproc_entry(#ctx: #krate::__private::ChildContext) -> ! {
                (&&#krate::__private::Probe::<(#(#arg_types,)*), #ret>::new()).run_fn(
                    #ctx,
                    |(#(#arg_names,)*)| #name(#(#arg_names),*),
                )
            }

            fn __multiproc_task(#ctx: #krate::__private::TaskInput<'_>) {
                (&&#krate::__private::Probe::<(#(#arg_types,)*), #ret>::new()).run_task(
                    #ctx,
                    |(#(#arg_names,)*)| #name(#(#arg_names),*),
                )
            }

            #krate::__private::inventory::submit! {
                #krate::__private::EntryPoint {
                    key: ::core::concat!(::core::module_path!(), "::", #name_str),
                    run: __multiproc_entry,
                    task: __multiproc_task,
                    state_type: #krate::__private::type_name::<(#(#arg_types,)*)>,
                    fn_type: ::core::option::Option::Some(__multiproc_fn_type),
                }
            }
        };
    }
}

fn process_impl(krate: &Path, item: &ItemImpl, output: &ReturnType) -> TokenStream {
    let self_ty = &item.self_ty;
    // `Self` means the type inside the impl block, not in the items generated beside it.
    let ret = replace_self(output_type(output), self_ty);
    let checks = [
        assert_transferable(krate, self_ty),
        assert_transferable(krate, &ret),
    ];
    let cfg_attrs = cfg_attrs(&item.attrs);
    let ctx = Ident::new("ctx", Span::mixed_site());
    quote! {
        #item

        #(#cfg_attrs)*
        impl #krate::__private::Process for #self_ty {
            type Output = #ret;
            const __KEY: &'static str =
                ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#self_ty));

            fn __run(self) -> #ret {
                <#self_ty>::run(self)
            }
        }

        #(#cfg_attrs)*
        const _: () = {
            #(#checks)*

            // Through the probe: a type that cannot cross is reported once, by the checks
            // above, not again here.
            #[allow(unused_imports)]
            use #krate::__private::{Checked as _, Unchecked as _};

            fn __multiproc_entry(#ctx: #krate::__private::ChildContext) -> ! {
                (&&#krate::__private::Probe::<#self_ty, #ret>::new())
                    .run_fn(#ctx, <#self_ty as #krate::__private::Process>::__run)
            }

            fn __multiproc_task(#ctx: #krate::__private::TaskInput<'_>) {
                (&&#krate::__private::Probe::<#self_ty, #ret>::new())
                    .run_task(#ctx, <#self_ty as #krate::__private::Process>::__run)
            }

            #krate::__private::inventory::submit! {
                #krate::__private::EntryPoint {
                    key: <#self_ty as #krate::__private::Process>::__KEY,
                    run: __multiproc_entry,
                    task: __multiproc_task,
                    state_type: #krate::__private::type_name::<#self_ty>,
                    fn_type: ::core::option::Option::None,
                }
            }
        };
    }
}

/// `ty` with every `Self` replaced by `self_ty`.
fn replace_self(mut ty: Type, self_ty: &Type) -> Type {
    struct ReplaceSelf<'a>(&'a Type);
    impl syn::visit_mut::VisitMut for ReplaceSelf<'_> {
        fn visit_type_mut(&mut self, ty: &mut Type) {
            if let Type::Path(p) = ty
                && p.qself.is_none()
                && p.path.is_ident("Self")
            {
                *ty = self.0.clone();
                return;
            }
            syn::visit_mut::visit_type_mut(self, ty);
        }
    }
    syn::visit_mut::VisitMut::visit_type_mut(&mut ReplaceSelf(self_ty), &mut ty);
    ty
}

/// Inserts `stmt` as the first statement of the function.
fn prepend(mut item: ItemFn, stmt: TokenStream) -> ItemFn {
    let stmt: syn::Stmt = syn::parse_quote!(#stmt);
    item.block.stmts.insert(0, stmt);
    item
}

pub(crate) fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = match Args::parse("multiproc::main", args) {
        Ok(args) => args,
        Err(e) => return with_errors(item, e),
    };
    let f = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = syn::Error::new(e.span(), "`#[multiproc::main]` goes on `fn main`");
            return with_errors(item, e);
        }
    };
    if let Err(e) = validate::hook_fn(&f, "multiproc::main", true) {
        if f.sig.asyncness.is_some() {
            // One error for one mistake: not rustc's "`main` is not allowed to be `async`" too.
            let mut stand_in = f.clone();
            stand_in.sig.asyncness = None;
            stand_in.block = syn::parse_quote!({ ::core::unreachable!() });
            return with_errors(quote!(#stand_in), e);
        }
        return with_errors(item, e);
    }
    let krate = &args.krate;
    let f = prepend(f, quote!(#krate::init();));
    quote!(#f)
}

pub(crate) fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = match Args::parse("multiproc::test", args) {
        Ok(args) => args,
        Err(e) => return with_errors(item, e),
    };
    let f = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = syn::Error::new(e.span(), "`#[multiproc::test]` goes on a test `fn`");
            return with_errors(quote!(#[::core::prelude::v1::test] #item), e);
        }
    };
    if let Err(e) = validate::hook_fn(&f, "multiproc::test", false) {
        return with_errors(quote!(#[::core::prelude::v1::test] #item), e);
    }
    let krate = &args.krate;
    let name = f.sig.ident.to_string();
    let f = prepend(
        f,
        quote!(#krate::__private::test_hook(::core::module_path!(), #name);),
    );
    quote! {
        #[::core::prelude::v1::test]
        #f
    }
}
