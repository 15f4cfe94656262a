//! `uniffi-api`: prints the interface a uniffi library exports, one declaration per line, in a
//! stable order (sorted by name; fields, variants and arguments in declaration order).
//!
//! The output is the API snapshot checked in as `ffi/api.txt`: the bindings of every language
//! are generated from this interface at build time, so a change to the exported API shows up
//! as a diff of a few lines there instead of thousands in generated code.
//! `scripts/api-snapshot.sh` runs it.
//!
//!     uniffi-api path/to/libunibus_ffi.so

use std::fmt::Write as _;

use anyhow::{bail, Context as _, Result};
use camino::Utf8PathBuf;
use uniffi_bindgen::interface::{
    Argument, AsType, ComponentInterface, DefaultValue, Field, Literal, Method, ObjectImpl, Type,
    UniffiTrait,
};
use uniffi_bindgen::library_mode::find_cis;
use uniffi_bindgen::EmptyCrateConfigSupplier;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [library] = args.as_slice() else {
        bail!("usage: uniffi-api LIBRARY");
    };
    let library = Utf8PathBuf::from(library);
    let mut cis = find_cis(&library, &EmptyCrateConfigSupplier)
        .with_context(|| format!("reading the uniffi metadata of {library}"))?;
    cis.sort_by(|a, b| a.namespace().cmp(b.namespace()));
    let mut out = String::from(
        "# The interface unibus_ffi exports to Kotlin, Python and Swift, printed by uniffi-api.\n\
         # Regenerate with scripts/api-snapshot.sh; scripts/test.sh fails while it is stale.\n\n",
    );
    for ci in &cis {
        render(&mut out, ci);
    }
    print!("{out}");
    Ok(())
}

fn render(out: &mut String, ci: &ComponentInterface) {
    let _ = writeln!(out, "namespace {}", ci.namespace());

    let mut functions: Vec<_> = ci.function_definitions().iter().collect();
    functions.sort_by_key(|f| f.name());
    for f in functions {
        let signature = signature(f.name(), &f.arguments(), f.return_type(), f.throws_type());
        let _ = writeln!(out, "\n{}fn {signature}", asyncness(f.is_async()));
    }

    let mut objects: Vec<_> = ci.object_definitions().iter().collect();
    objects.sort_by_key(|o| o.name());
    for o in objects {
        let kind = match o.imp() {
            ObjectImpl::Struct => "object".to_string(),
            ObjectImpl::Trait(kind) => format!("trait({})", format!("{kind:?}").to_lowercase()),
        };
        let _ = writeln!(out, "\n{kind} {}{}", o.name(), traits(&o.uniffi_traits()));
        let mut constructors = o.constructors();
        constructors.sort_by_key(|c| c.name());
        for c in constructors {
            let signature = signature(c.name(), &c.arguments(), None, c.throws_type());
            let _ = writeln!(out, "  {}constructor {signature}", asyncness(c.is_async()));
        }
        methods(out, &o.methods());
    }

    let mut records: Vec<_> = ci.record_definitions().iter().collect();
    records.sort_by_key(|r| r.name());
    for r in records {
        let _ = writeln!(out, "\nrecord {}", r.name());
        for field in r.fields() {
            let _ = writeln!(out, "  {}", field_line(field));
        }
        methods(out, &r.methods().iter().collect::<Vec<_>>());
    }

    let mut enums: Vec<_> = ci.enum_definitions().iter().collect();
    enums.sort_by_key(|e| e.name());
    for e in enums {
        let is_error = ci.is_name_used_as_error(e.name());
        let kind = if is_error { "error" } else { "enum" };
        let mut notes = Vec::new();
        if is_error && e.is_flat() {
            // Flat errors reach the foreign side as the variant and the Rust error's message.
            notes.push("flat".to_string());
        }
        if e.is_non_exhaustive() {
            notes.push("non-exhaustive".to_string());
        }
        if let Some(discr) = e.variant_discr_type() {
            notes.push(format!("repr {}", type_name(discr)));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" [{}]", notes.join(", "))
        };
        let _ = writeln!(out, "\n{kind} {}{notes}", e.name());
        for variant in e.variants() {
            let fields: Vec<String> = variant.fields().iter().map(field_line).collect();
            if fields.is_empty() {
                let _ = writeln!(out, "  {}", variant.name());
            } else {
                let _ = writeln!(out, "  {}({})", variant.name(), fields.join(", "));
            }
        }
        methods(out, &e.methods().iter().collect::<Vec<_>>());
    }

    let mut callbacks: Vec<_> = ci.callback_interface_definitions().iter().collect();
    callbacks.sort_by_key(|c| c.name());
    for c in callbacks {
        let _ = writeln!(out, "\ncallback {}", c.name());
        methods(out, &c.methods());
    }

    let mut customs: Vec<String> = ci
        .iter_local_types()
        .filter_map(|t| match t {
            Type::Custom { name, builtin, .. } => {
                Some(format!("custom {name} = {}", type_name(builtin)))
            }
            _ => None,
        })
        .collect();
    customs.sort();
    customs.dedup();
    for custom in customs {
        let _ = writeln!(out, "\n{custom}");
    }
}

fn methods(out: &mut String, methods: &[&Method]) {
    let mut methods = methods.to_vec();
    methods.sort_by_key(|m| m.name());
    for m in methods {
        let signature = signature(m.name(), &m.arguments(), m.return_type(), m.throws_type());
        let _ = writeln!(out, "  {}method {signature}", asyncness(m.is_async()));
    }
}

fn traits(traits: &[&UniffiTrait]) -> String {
    let mut names: Vec<&str> = traits
        .iter()
        .map(|t| match t {
            UniffiTrait::Debug { .. } => "Debug",
            UniffiTrait::Display { .. } => "Display",
            UniffiTrait::Eq { .. } => "Eq",
            UniffiTrait::Hash { .. } => "Hash",
            UniffiTrait::Ord { .. } => "Ord",
        })
        .collect();
    names.sort_unstable();
    if names.is_empty() {
        String::new()
    } else {
        format!(" [{}]", names.join(", "))
    }
}

fn asyncness(is_async: bool) -> &'static str {
    if is_async {
        "async "
    } else {
        ""
    }
}

fn signature(
    name: &str,
    arguments: &[&Argument],
    returns: Option<&Type>,
    throws: Option<&Type>,
) -> String {
    let arguments: Vec<String> = arguments
        .iter()
        .map(|a| {
            let mut text = format!("{}: {}", a.name(), type_name(&a.as_type()));
            if let Some(default) = a.default_value() {
                let _ = write!(text, " = {}", default_value(default));
            }
            text
        })
        .collect();
    let mut text = format!("{name}({})", arguments.join(", "));
    if let Some(returns) = returns {
        let _ = write!(text, " -> {}", type_name(returns));
    }
    if let Some(throws) = throws {
        let _ = write!(text, " throws {}", type_name(throws));
    }
    text
}

fn field_line(field: &Field) -> String {
    let mut text = format!("{}: {}", field.name(), type_name(&field.as_type()));
    if let Some(default) = field.default_value() {
        let _ = write!(text, " = {}", default_value(default));
    }
    text
}

fn type_name(t: &Type) -> String {
    match t {
        Type::UInt8 => "u8".into(),
        Type::Int8 => "i8".into(),
        Type::UInt16 => "u16".into(),
        Type::Int16 => "i16".into(),
        Type::UInt32 => "u32".into(),
        Type::Int32 => "i32".into(),
        Type::UInt64 => "u64".into(),
        Type::Int64 => "i64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Boolean => "bool".into(),
        Type::String => "string".into(),
        Type::Bytes => "bytes".into(),
        Type::Timestamp => "timestamp".into(),
        Type::Duration => "duration".into(),
        Type::Object { name, .. }
        | Type::Record { name, .. }
        | Type::Enum { name, .. }
        | Type::CallbackInterface { name, .. }
        | Type::Custom { name, .. } => name.clone(),
        Type::Box { inner_type } => type_name(inner_type),
        Type::Optional { inner_type } => format!("{}?", type_name(inner_type)),
        Type::Sequence { inner_type } => format!("[{}]", type_name(inner_type)),
        Type::Set { inner_type } => format!("set<{}>", type_name(inner_type)),
        Type::Map {
            key_type,
            value_type,
        } => format!("map<{}, {}>", type_name(key_type), type_name(value_type)),
    }
}

fn default_value(default: &DefaultValue) -> String {
    match default {
        DefaultValue::Default => "default".into(),
        DefaultValue::Literal(literal) => literal_text(literal),
    }
}

fn literal_text(literal: &Literal) -> String {
    match literal {
        Literal::Boolean(b) => b.to_string(),
        Literal::String(s) => format!("{s:?}"),
        Literal::UInt(v, _, _) => v.to_string(),
        Literal::Int(v, _, _) => v.to_string(),
        Literal::Float(v, _) => v.clone(),
        Literal::Enum(variant, t) => format!("{}.{variant}", type_name(t)),
        Literal::EmptySequence => "[]".into(),
        Literal::EmptyMap => "{}".into(),
        Literal::EmptySet => "set()".into(),
        Literal::None => "none".into(),
        Literal::Some { inner } => default_value(inner),
    }
}
