//! A small walker over the spanned TOML tree that collects *every* error
//! with its key path and line, instead of stopping at the first one as serde
//! does.

use std::ops::Range;
use std::time::Duration;

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::units;
use super::{ConfigError, ConfigErrors};

pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// Error sink: knows the source text so spans become line numbers.
pub(crate) struct Ctx<'s> {
    src: &'s str,
    errors: Vec<ConfigError>,
}

impl<'s> Ctx<'s> {
    pub(crate) fn new(src: &'s str) -> Self {
        Ctx { src, errors: Vec::new() }
    }

    pub(crate) fn line_of(&self, span: &Range<usize>) -> Option<u32> {
        let end = span.start.min(self.src.len());
        let line = self.src.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count();
        u32::try_from(line + 1).ok()
    }

    /// Records an error at `path`, located at `span` when known.
    pub(crate) fn error(&mut self, path: &str, span: Option<&Range<usize>>, message: impl Into<String>) {
        let line = span.and_then(|s| self.line_of(s));
        self.errors.push(ConfigError { path: path.to_string(), line, message: message.into() });
    }

    pub(crate) fn finish<T>(mut self, value: Option<T>) -> Result<T, ConfigErrors> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => {
                self.errors.sort_by_key(|e| e.line.unwrap_or(u32::MAX));
                Err(ConfigErrors(self.errors))
            }
        }
    }
}

/// Joins a table path and a key: `""+"listen"`, `"routes[0]"+"name"`.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A table being read: remembers which keys were taken so that the rest can
/// be reported as unknown.
pub(crate) struct Table<'a, 'i> {
    pub(crate) path: String,
    pub(crate) span: Range<usize>,
    entries: &'a DeTable<'i>,
    used: Vec<&'static str>,
}

impl<'a, 'i> Table<'a, 'i> {
    pub(crate) fn root(table: &'a Spanned<DeTable<'i>>) -> Self {
        Table { path: String::new(), span: table.span(), entries: table.get_ref(), used: Vec::new() }
    }

    /// Reads `value` as a table, or records a type error.
    pub(crate) fn from_value(ctx: &mut Ctx<'_>, path: String, value: &'a Value<'i>) -> Option<Self> {
        match value.get_ref() {
            DeValue::Table(entries) => Some(Table { path, span: value.span(), entries, used: Vec::new() }),
            other => {
                ctx.error(&path, Some(&value.span()), format!("expected a table, found {}", other.type_str()));
                None
            }
        }
    }

    /// The value at `key`, marking the key as known.
    pub(crate) fn get(&mut self, key: &'static str) -> Option<&'a Value<'i>> {
        self.used.push(key);
        self.entries.iter().find(|(k, _)| k.get_ref().as_ref() == key).map(|(_, v)| v)
    }

    /// All entries (for maps keyed by user names, such as `backends`).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&'a str, &'a Value<'i>)> {
        self.entries.iter().map(|(k, v)| (k.get_ref().as_ref(), v))
    }

    pub(crate) fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Ends a table whose keys are user-chosen names (all of them are valid).
    pub(crate) fn finish_as_map(&self) {}

    /// Reports every key that no `get` asked for.
    pub(crate) fn finish(&self, ctx: &mut Ctx<'_>) {
        for (k, _) in self.entries.iter() {
            let name: &str = k.get_ref().as_ref();
            if !self.used.contains(&name) {
                let mut known: Vec<&str> = self.used.clone();
                known.sort_unstable();
                known.dedup();
                ctx.error(
                    &join(&self.path, name),
                    Some(&k.span()),
                    format!("unknown key (known keys here: {})", known.join(", ")),
                );
            }
        }
    }

    // --- typed getters: `None` when absent or invalid (the error is recorded) ---

    pub(crate) fn string(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<String> {
        let v = self.get(key)?;
        as_str(ctx, &self.key_path(key), v).map(str::to_string)
    }

    pub(crate) fn required_string(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<String> {
        if self.get(key).is_none() {
            ctx.error(&self.key_path(key), Some(&self.span.clone()), "is required");
            return None;
        }
        self.string(ctx, key)
    }

    pub(crate) fn duration(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<Duration> {
        let v = self.get(key)?;
        let path = self.key_path(key);
        let text = as_str(ctx, &path, v)?;
        match units::parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                ctx.error(&path, Some(&v.span()), e);
                None
            }
        }
    }

    /// A byte size: an integer, or a string with a unit (`64MiB`).
    pub(crate) fn size(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<u64> {
        let v = self.get(key)?;
        let path = self.key_path(key);
        if let DeValue::Integer(_) = v.get_ref() {
            return as_integer(ctx, &path, v).map(|n| n.max(0) as u64);
        }
        let text = as_str(ctx, &path, v)?;
        match units::parse_size(text) {
            Ok(n) => Some(n),
            Err(e) => {
                ctx.error(&path, Some(&v.span()), e);
                None
            }
        }
    }

    pub(crate) fn integer(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Option<u64> {
        let v = self.get(key)?;
        let path = self.key_path(key);
        let n = as_integer(ctx, &path, v)?;
        match u64::try_from(n) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                ctx.error(&path, Some(&v.span()), format!("{n} is out of range {}..={}", range.start(), range.end()));
                None
            }
        }
    }

    pub(crate) fn number(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<f64> {
        let v = self.get(key)?;
        as_number(ctx, &self.key_path(key), v)
    }

    pub(crate) fn boolean(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<bool> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                type_error(ctx, &self.key_path(key), v, "a boolean", other);
                None
            }
        }
    }

    pub(crate) fn table(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<Table<'a, 'i>> {
        let v = self.get(key)?;
        Table::from_value(ctx, self.key_path(key), v)
    }

    pub(crate) fn array(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<&'a DeArray<'i>> {
        let v = self.get(key)?;
        as_array(ctx, &self.key_path(key), v)
    }
}

fn type_error(ctx: &mut Ctx<'_>, path: &str, v: &Value<'_>, expected: &str, found: &DeValue<'_>) {
    ctx.error(path, Some(&v.span()), format!("expected {expected}, found {}", found.type_str()));
}

pub(crate) fn as_str<'a>(ctx: &mut Ctx<'_>, path: &str, v: &'a Value<'_>) -> Option<&'a str> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        other => {
            type_error(ctx, path, v, "a string", other);
            None
        }
    }
}

pub(crate) fn as_integer(ctx: &mut Ctx<'_>, path: &str, v: &Value<'_>) -> Option<i64> {
    match v.get_ref() {
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Some(n),
            Err(_) => {
                ctx.error(path, Some(&v.span()), "integer out of range");
                None
            }
        },
        other => {
            type_error(ctx, path, v, "an integer", other);
            None
        }
    }
}

pub(crate) fn as_number(ctx: &mut Ctx<'_>, path: &str, v: &Value<'_>) -> Option<f64> {
    match v.get_ref() {
        DeValue::Integer(_) => as_integer(ctx, path, v).map(|n| n as f64),
        DeValue::Float(f) => match f.as_str().replace('_', "").parse::<f64>() {
            Ok(x) if x.is_finite() => Some(x),
            _ => {
                ctx.error(path, Some(&v.span()), "expected a finite number");
                None
            }
        },
        other => {
            type_error(ctx, path, v, "a number", other);
            None
        }
    }
}

pub(crate) fn as_array<'a, 'i>(ctx: &mut Ctx<'_>, path: &str, v: &'a Value<'i>) -> Option<&'a DeArray<'i>> {
    match v.get_ref() {
        DeValue::Array(a) => Some(a),
        other => {
            type_error(ctx, path, v, "an array", other);
            None
        }
    }
}
