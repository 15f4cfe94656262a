//! Strict reading of untrusted JSON bodies: `/register`, `/admin` and the admin operations'
//! params (protocol §10 and §13).
//!
//! A body must be one JSON object whose field names are all known and appear once. Every field
//! has one type: a string is not a number, a number is a whole non-negative integer where a count
//! is meant, and `null` is never taken for "absent". An optional field is either left out or
//! given a value.
//!
//! Errors name the field by its known name and say what it must be. They never repeat a value
//! from the request, nor an unknown field's name (which could be a token pasted in the wrong
//! place), so they are safe to log and to send back.

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Why a body or a field was refused. The message names only fields this server defines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The bytes are not JSON.
    #[error("the body is not valid JSON (line {line}, column {column})")]
    Syntax {
        /// 1-based line of the first error.
        line: usize,
        /// 1-based column of the first error.
        column: usize,
    },
    /// The JSON is not an object (an array, a string, a number, `true`, `false` or `null`).
    #[error("{what} must be a JSON object")]
    NotObject {
        /// What should have been an object: `the body` or a field.
        what: &'static str,
    },
    /// A field name appears twice in an object, at any depth.
    #[error("a field appears more than once in an object in {what}")]
    Duplicate {
        /// Where: `the body`.
        what: &'static str,
    },
    /// A field this object does not take.
    #[error("{what} has a field it does not take; its fields are: {}", allowed.join(", "))]
    Unknown {
        /// Where: `the body` or a field.
        what: &'static str,
        /// The fields it takes.
        allowed: &'static [&'static str],
    },
    /// A required field is missing.
    #[error("the field `{field}` is missing")]
    Missing {
        /// Its name.
        field: &'static str,
    },
    /// A field is `null`. Leave an optional field out instead.
    #[error("the field `{field}` is null; leave it out or give {expected}")]
    Null {
        /// Its name.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A field has the wrong type or is out of range.
    #[error("the field `{field}` must be {expected}")]
    Invalid {
        /// Its name.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
}

/// A JSON object read strictly: no duplicate names, only known names. Take each field once with
/// the typed accessors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object {
    fields: Vec<(String, Value)>,
}

/// Walks a JSON document and refuses any object, at any depth, that names a field twice (a
/// parsed [`Value`] would silently keep the last one).
struct NoDuplicates;

/// The marker error of a duplicate name (serde errors carry text only).
const DUPLICATE: &str = "unibus: duplicate field";

impl<'de> serde::Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Walk;
        impl<'de> Visitor<'de> for Walk {
            type Value = NoDuplicates;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
                let mut names: Vec<String> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if names.contains(&name) {
                        return Err(serde::de::Error::custom(DUPLICATE));
                    }
                    names.push(name);
                    map.next_value::<NoDuplicates>()?;
                }
                Ok(NoDuplicates)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
                while seq.next_element::<NoDuplicates>()?.is_some() {}
                Ok(NoDuplicates)
            }
            fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
                Ok(NoDuplicates)
            }
            fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
                Ok(NoDuplicates)
            }
            fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
                Ok(NoDuplicates)
            }
            fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
                Ok(NoDuplicates)
            }
            fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
                Ok(NoDuplicates)
            }
            fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
                Ok(NoDuplicates)
            }
        }
        deserializer.deserialize_any(Walk)
    }
}

/// Whether the JSON document `bytes` names a field twice in any object, at any depth (`false`
/// for bytes that are not JSON: their reader refuses them for that).
pub(crate) fn names_a_field_twice(bytes: &[u8]) -> bool {
    serde_json::from_slice::<NoDuplicates>(bytes)
        .is_err_and(|e| e.classify() == serde_json::error::Category::Data)
}

impl Object {
    /// Reads `bytes` as one JSON object that takes only the fields in `allowed`.
    pub fn parse(bytes: &[u8], allowed: &'static [&'static str]) -> Result<Self, JsonError> {
        const WHAT: &str = "the body";
        // First as any JSON value, so that syntax errors and non-objects are told apart.
        let value: Value = serde_json::from_slice(bytes).map_err(|e| JsonError::Syntax {
            line: e.line(),
            column: e.column(),
        })?;
        if !value.is_object() {
            return Err(JsonError::NotObject { what: WHAT });
        }
        // Then once more for the duplicates the value above merged, at any depth.
        if names_a_field_twice(bytes) {
            return Err(JsonError::Duplicate { what: WHAT });
        }
        Self::from_value(value, WHAT, allowed)
    }

    /// The object in `value` (an already parsed field, such as `params`), which takes only the
    /// fields in `allowed`. [`Object::parse`] already refused duplicates at every depth.
    pub fn from_value(
        value: Value,
        what: &'static str,
        allowed: &'static [&'static str],
    ) -> Result<Self, JsonError> {
        match value {
            Value::Object(map) => Self::checked(map.into_iter().collect(), what, allowed),
            _ => Err(JsonError::NotObject { what }),
        }
    }

    fn checked(
        fields: Vec<(String, Value)>,
        what: &'static str,
        allowed: &'static [&'static str],
    ) -> Result<Self, JsonError> {
        if fields
            .iter()
            .any(|(name, _)| !allowed.contains(&name.as_str()))
        {
            return Err(JsonError::Unknown { what, allowed });
        }
        Ok(Self { fields })
    }

    /// Whether the object has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Takes the field `name` out, `None` if absent; `null` is refused.
    fn take(
        &mut self,
        name: &'static str,
        expected: &'static str,
    ) -> Result<Option<Value>, JsonError> {
        let Some(index) = self.fields.iter().position(|(n, _)| n == name) else {
            return Ok(None);
        };
        match self.fields.swap_remove(index).1 {
            Value::Null => Err(JsonError::Null {
                field: name,
                expected,
            }),
            value => Ok(Some(value)),
        }
    }

    /// An optional string field.
    pub fn optional_str(&mut self, name: &'static str) -> Result<Option<String>, JsonError> {
        const EXPECTED: &str = "a string";
        match self.take(name, EXPECTED)? {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(JsonError::Invalid {
                field: name,
                expected: EXPECTED,
            }),
        }
    }

    /// A required string field.
    pub fn str(&mut self, name: &'static str) -> Result<String, JsonError> {
        self.optional_str(name)?
            .ok_or(JsonError::Missing { field: name })
    }

    /// An optional boolean field.
    pub fn optional_bool(&mut self, name: &'static str) -> Result<Option<bool>, JsonError> {
        const EXPECTED: &str = "true or false";
        match self.take(name, EXPECTED)? {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(flag)),
            Some(_) => Err(JsonError::Invalid {
                field: name,
                expected: EXPECTED,
            }),
        }
    }

    /// An optional whole number in `range`; `expected` says so in words for the error.
    pub fn optional_u64(
        &mut self,
        name: &'static str,
        range: std::ops::RangeInclusive<u64>,
        expected: &'static str,
    ) -> Result<Option<u64>, JsonError> {
        match self.take(name, expected)? {
            None => Ok(None),
            Some(value) => match value.as_u64() {
                Some(n) if range.contains(&n) => Ok(Some(n)),
                _ => Err(JsonError::Invalid {
                    field: name,
                    expected,
                }),
            },
        }
    }

    /// A required whole number, negative or not (`i64`).
    pub fn i64(&mut self, name: &'static str, expected: &'static str) -> Result<i64, JsonError> {
        match self.take(name, expected)? {
            None => Err(JsonError::Missing { field: name }),
            Some(value) => value.as_i64().ok_or(JsonError::Invalid {
                field: name,
                expected,
            }),
        }
    }

    /// An optional object field, read as a JSON value (checked by its own [`Object`]).
    pub fn optional_object(&mut self, name: &'static str) -> Result<Option<Value>, JsonError> {
        const EXPECTED: &str = "a JSON object";
        match self.take(name, EXPECTED)? {
            None => Ok(None),
            Some(value @ Value::Object(_)) => Ok(Some(value)),
            Some(_) => Err(JsonError::Invalid {
                field: name,
                expected: EXPECTED,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[&str] = &["name", "count", "flag"];

    #[test]
    fn only_an_object_is_a_body() {
        for body in [&b"[1, 2]"[..], b"\"text\"", b"3", b"true", b"null"] {
            assert_eq!(
                Object::parse(body, FIELDS).unwrap_err(),
                JsonError::NotObject { what: "the body" }
            );
        }
        assert!(matches!(
            Object::parse(b"{", FIELDS).unwrap_err(),
            JsonError::Syntax { .. }
        ));
    }

    #[test]
    fn duplicate_and_unknown_fields_are_refused_without_echoing_them() {
        let secret = "deadbeef".repeat(8);
        let nested = br#"{"name": "a", "flag": {"x": 1, "x": 2}}"#;
        assert_eq!(
            Object::parse(nested, FIELDS).unwrap_err(),
            JsonError::Duplicate { what: "the body" }
        );
        let duplicate = format!(r#"{{"name": "a", "name": "{secret}"}}"#);
        let error = Object::parse(duplicate.as_bytes(), FIELDS).unwrap_err();
        assert_eq!(error, JsonError::Duplicate { what: "the body" });
        assert!(!error.to_string().contains(&secret));
        let unknown = format!(r#"{{"{secret}": 1}}"#);
        let error = Object::parse(unknown.as_bytes(), FIELDS).unwrap_err();
        assert!(matches!(error, JsonError::Unknown { .. }));
        assert!(!error.to_string().contains(&secret));
    }

    #[test]
    fn a_null_or_a_wrong_type_is_never_a_default() {
        let mut object = Object::parse(br#"{"count": null}"#, FIELDS).unwrap();
        assert!(matches!(
            object.optional_u64("count", 1..=10, "1 to 10"),
            Err(JsonError::Null { .. })
        ));
        for count in [
            "\"1\"",
            "-1",
            "1.5",
            "1.0",
            "0",
            "11",
            "1e3",
            "18446744073709551616",
        ] {
            let body = format!(r#"{{"count": {count}}}"#);
            let mut object = Object::parse(body.as_bytes(), FIELDS).unwrap();
            assert!(
                matches!(
                    object.optional_u64("count", 1..=10, "1 to 10"),
                    Err(JsonError::Invalid { .. })
                ),
                "{count}"
            );
        }
        let mut object = Object::parse(br#"{"flag": 1, "name": 2}"#, FIELDS).unwrap();
        assert!(object.optional_bool("flag").is_err());
        assert!(object.str("name").is_err());
        let mut object = Object::parse(br#"{"count": 7, "flag": true}"#, FIELDS).unwrap();
        assert_eq!(object.optional_u64("count", 1..=10, "").unwrap(), Some(7));
        assert_eq!(object.optional_bool("flag").unwrap(), Some(true));
        assert_eq!(object.optional_str("name").unwrap(), None);
        assert_eq!(
            object.str("name"),
            Err(JsonError::Missing { field: "name" })
        );
    }

    #[test]
    fn extreme_integers_are_read_without_overflow() {
        let mut object = Object::parse(br#"{"count": -9223372036854775808}"#, FIELDS).unwrap();
        assert_eq!(object.i64("count", "").unwrap(), i64::MIN);
        let mut object = Object::parse(br#"{"count": 9223372036854775808}"#, FIELDS).unwrap();
        assert!(object.i64("count", "").is_err());
    }
}
