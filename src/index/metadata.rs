//! Content metadata: a JSON document per CID (name, size, type, tags,
//! anything a user adds), with equality, tag and name-prefix queries.
//!
//! # Records
//! A document is stored as one record per top-level field, so the cluster's
//! last-writer-wins rule applies per field: two masters merging different
//! fields of one document concurrently both win, and for one field the
//! later write wins. The key is `~m/<cid>/<field>` (the CID canonical; CIDs
//! never hold a `/`), the value the field's JSON text. A removed field is a
//! tombstone; JSON `null` means "remove" at the API and is never stored. A
//! document is whatever fields currently have a value, so a put that
//! replaces a document races field by field with concurrent writes: a field
//! another master added meanwhile survives it.
//!
//! # Limits
//! Every record, whoever sent it ([`check`]): a field name of 1 to
//! [`MAX_FIELD`] bytes without `/` or control characters; a value of at most
//! [`MAX_VALUE`] bytes of JSON, arrays and objects nested at most
//! [`MAX_DEPTH`] deep (measured on the bytes before parsing, so hostile
//! input never recurses), never `null`. Every document a write leaves
//! behind (the planners, on the master): at most [`MAX_FIELDS`] fields and
//! [`MAX_DOC`] bytes. Concurrent merges on several masters can each stay
//! within those and together pass them; the view takes such a document as
//! it is.
//!
//! # The view
//! [`Metadata`] is a pure function of the records it currently holds: the
//! same final records applied in any order give the same view, and a record
//! that fails [`check`] counts as absent. Queries compare values by their
//! canonical text (compact JSON with sorted object keys), so `1` and `1.0`
//! differ. An array is found by its whole value and by each element (one
//! level: a `tags` array is found by each tag). Pages hold 1 to
//! [`MAX_PAGE`] documents, ordered by CID, or for [`Metadata::name_prefix`]
//! by the name's JSON text then CID (the name's own order unless it holds
//! `"`, `\` or control characters).
//!
//! # Costs
//! Each value's canonical text is held once, shared by its document and an
//! equality table over (field, text, CID); an array's elements are held
//! again, one table entry each. Applying a record costs O(log n) per table
//! entry (changing an array parses its old text to find its elements); a
//! query O(log n) plus its page, and a name query also skips name arrays
//! whose elements match. Documents are returned parsed from their texts.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::index::{MAX_VALUE, TAG_META, View};
use crate::pinset::canonical_cid;

/// Longest field name, in bytes.
pub const MAX_FIELD: usize = 128;
/// Deepest nesting of arrays and objects in a field's value.
pub const MAX_DEPTH: usize = 32;
/// Most fields in a document (checked at write time).
pub const MAX_FIELDS: usize = 256;
/// Largest document: its field names and values' JSON text, summed, in
/// bytes (checked at write time).
pub const MAX_DOC: usize = 256 * 1024;
/// Most documents in a page of query results.
pub const MAX_PAGE: usize = 1000;

/// A metadata document: its top-level fields.
pub type Doc = serde_json::Map<String, Value>;
/// A planned record: its key after `~m/`, and its value (`None`: a tombstone).
pub use crate::index::Record;

/// The key of a field's record, after `~m/`.
pub fn rest(cid: &str, field: &str) -> String {
    format!("{cid}/{field}")
}

/// A field's record: its key after `~m/`, and its value.
pub fn record(cid: &str, field: &str, value: &Value) -> (String, Vec<u8>) {
    (rest(cid, field), value.to_string().into_bytes())
}

/// Checks a record a master made or a peer sent (`None`: a tombstone).
pub fn check(rest: &str, value: Option<&[u8]>) -> Result<(), String> {
    let (_, field) = split_rest(rest)?;
    if let Some(v) = value {
        decode(field, v)?;
    }
    Ok(())
}

/// Plans replacing `cid`'s document by `new`: a record for each field that
/// changes, a tombstone for each field of `current` that `new` lacks.
/// `current` is the document as this node sees it.
pub fn plan_put(current: Option<&Doc>, cid: &str, new: &Doc) -> Result<Vec<Record>, String> {
    check_cid(cid)?;
    let mut encoded = encode(new)?;
    let mut plan = Vec::new();
    for (field, value) in new {
        if current.and_then(|c| c.get(field)) != Some(value) {
            plan.push((rest(cid, field), encoded.remove(field.as_str())));
        }
    }
    for field in current.into_iter().flat_map(|c| c.keys()) {
        if !new.contains_key(field) {
            plan.push((rest(cid, field), None));
        }
    }
    Ok(plan)
}

/// Plans a JSON merge patch of `cid`'s document at the top level: a field
/// set to `null` is removed, any other replaced whole. Fields the patch
/// would not change get no record.
pub fn plan_merge(current: Option<&Doc>, cid: &str, patch: &Doc) -> Result<Vec<Record>, String> {
    check_cid(cid)?;
    let mut result = current.cloned().unwrap_or_default();
    for (field, value) in patch {
        check_field(field)?;
        if value.is_null() {
            result.remove(field);
        } else {
            result.insert(field.clone(), value.clone());
        }
    }
    let mut encoded = encode(&result)?;
    let mut plan = Vec::new();
    for (field, value) in patch {
        let old = current.and_then(|c| c.get(field));
        if value.is_null() {
            if old.is_some() {
                plan.push((rest(cid, field), None));
            }
        } else if old != Some(value) {
            plan.push((rest(cid, field), encoded.remove(field.as_str())));
        }
    }
    Ok(plan)
}

/// Plans removing `cid`'s document: a tombstone for each of its fields.
pub fn plan_delete(current: Option<&Doc>, cid: &str) -> Vec<Record> {
    current
        .into_iter()
        .flat_map(|c| c.keys())
        .map(|field| (rest(cid, field), None))
        .collect()
}

/// Checks a whole document a write leaves behind and encodes its fields.
fn encode(doc: &Doc) -> Result<BTreeMap<&str, Vec<u8>>, String> {
    if doc.len() > MAX_FIELDS {
        return Err(format!(
            "metadata document with {} fields, more than {MAX_FIELDS}",
            doc.len()
        ));
    }
    let mut size = 0;
    let mut encoded = BTreeMap::new();
    for (field, value) in doc {
        check_field(field)?;
        if value.is_null() {
            return Err(format!(
                "metadata field {field:?} is null (a document stores no nulls; \
                 merge a null to remove a field)"
            ));
        }
        let bytes = value.to_string().into_bytes();
        check_value_bytes(field, &bytes)?;
        size += field.len() + bytes.len();
        encoded.insert(field.as_str(), bytes);
    }
    if size > MAX_DOC {
        return Err(format!(
            "metadata document of {size} bytes, more than {MAX_DOC}"
        ));
    }
    Ok(encoded)
}

fn split_rest(rest: &str) -> Result<(&str, &str), String> {
    let (cid, field) = rest
        .split_once('/')
        .ok_or_else(|| format!("metadata record {rest:?} is not <cid>/<field>"))?;
    check_cid(cid)?;
    check_field(field)?;
    Ok((cid, field))
}

fn check_cid(cid: &str) -> Result<(), String> {
    if canonical_cid(cid)? != cid {
        return Err(format!("CID {cid:?} is not in canonical form"));
    }
    Ok(())
}

fn check_field(field: &str) -> Result<(), String> {
    if field.is_empty() || field.len() > MAX_FIELD {
        return Err(format!(
            "metadata field name {field:?}: expected 1 to {MAX_FIELD} bytes"
        ));
    }
    if field.contains('/') {
        return Err(format!("metadata field name {field:?} contains '/'"));
    }
    if field.chars().any(char::is_control) {
        return Err(format!(
            "metadata field name {field:?} contains a control character"
        ));
    }
    Ok(())
}

/// The bounds a value's bytes must keep before they are parsed.
fn check_value_bytes(field: &str, bytes: &[u8]) -> Result<(), String> {
    if bytes.len() > MAX_VALUE {
        return Err(format!(
            "metadata field {field:?}: value of {} bytes, more than {MAX_VALUE}",
            bytes.len()
        ));
    }
    if nested_deeper_than(bytes, MAX_DEPTH) {
        return Err(format!(
            "metadata field {field:?}: arrays and objects nested more than {MAX_DEPTH} deep"
        ));
    }
    Ok(())
}

/// Parses a stored value, checking every rule on it.
fn decode(field: &str, bytes: &[u8]) -> Result<Value, String> {
    check_value_bytes(field, bytes)?;
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("metadata field {field:?}: value is not JSON: {e}"))?;
    if value.is_null() {
        return Err(format!(
            "metadata field {field:?}: null is never stored (a removed field is a tombstone)"
        ));
    }
    Ok(value)
}

/// Whether JSON text nests arrays and objects deeper than `max`, by a scan
/// of its bytes: exact for valid JSON, and never recursing on any input.
fn nested_deeper_than(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A page of documents and the cursor of the next page, if more remain.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Found {
    pub items: Vec<(String, Doc)>,
    pub next: Option<String>,
}

/// The size of the view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MetadataStats {
    pub documents: u64,
    pub fields: u64,
}

/// One field's equality table: (a value's canonical text or one of its
/// elements', CID).
type Entries = BTreeSet<(Arc<str>, Arc<str>)>;

/// The query view over the metadata records (see the module docs).
#[derive(Debug, Default)]
pub struct Metadata {
    /// CID -> field -> the value's canonical text.
    docs: BTreeMap<Arc<str>, BTreeMap<Box<str>, Arc<str>>>,
    /// Field -> its entries.
    table: BTreeMap<Box<str>, Entries>,
    /// Fields in all documents.
    fields: u64,
}

impl View for Metadata {
    fn apply(&mut self, tag: u8, rest: &str, value: Option<&[u8]>) {
        if tag != TAG_META {
            return;
        }
        let Ok((cid, field)) = split_rest(rest) else {
            return;
        };
        self.remove(cid, field);
        // A value that fails the checks counts as absent, like a tombstone.
        if let Some(value) = value.and_then(|v| decode(field, v).ok()) {
            self.insert(cid, field, &value);
        }
    }
}

impl Metadata {
    fn insert(&mut self, cid: &str, field: &str, value: &Value) {
        let cid: Arc<str> = match self.docs.get_key_value(cid) {
            Some((k, _)) => k.clone(),
            None => cid.into(),
        };
        let text: Arc<str> = value.to_string().into();
        let keys = index_keys(value, &text);
        self.docs
            .entry(cid.clone())
            .or_default()
            .insert(field.into(), text);
        self.fields += 1;
        let entries = match self.table.get_mut(field) {
            Some(entries) => entries,
            None => self.table.entry(field.into()).or_default(),
        };
        for key in keys {
            entries.insert((key, cid.clone()));
        }
    }

    fn remove(&mut self, cid: &str, field: &str) {
        let Some(doc) = self.docs.get_mut(cid) else {
            return;
        };
        let Some(text) = doc.remove(field) else {
            return;
        };
        if doc.is_empty() {
            self.docs.remove(cid);
        }
        self.fields -= 1;
        // Only an array has more keys than its text.
        let keys = match text.starts_with('[').then(|| serde_json::from_str(&text)) {
            Some(Ok(value)) => index_keys(&value, &text),
            _ => vec![text],
        };
        if let Some(entries) = self.table.get_mut(field) {
            let cid: Arc<str> = cid.into();
            for key in keys {
                entries.remove(&(key, cid.clone()));
            }
            if entries.is_empty() {
                self.table.remove(field);
            }
        }
    }

    /// `cid`'s document, if it has any field.
    pub fn get(&self, cid: &str) -> Option<Doc> {
        self.docs.get(cid).map(parse_doc)
    }

    /// Documents whose `field` equals `value` or is an array holding it,
    /// by CID, from after the CID `after`.
    pub fn find(&self, field: &str, value: &Value, after: Option<&str>, limit: usize) -> Found {
        let Some(entries) = self.table.get(field) else {
            return Found::default();
        };
        let key: Arc<str> = value.to_string().into();
        let from = match after {
            Some(cid) => Excluded((key.clone(), cid.into())),
            None => Included((key.clone(), "".into())),
        };
        let hits = entries
            .range((from, Unbounded))
            .take_while(|(text, _)| *text == key)
            .map(|(_, cid)| cid);
        let (cids, more) = take_page(hits, limit);
        Found {
            next: cids.last().filter(|_| more).map(|c| c.to_string()),
            items: cids.into_iter().filter_map(|c| self.item(c)).collect(),
        }
    }

    /// Documents tagged `tag`: [`Metadata::find`] on the `tags` field.
    pub fn tagged(&self, tag: &str, after: Option<&str>, limit: usize) -> Found {
        self.find("tags", &Value::String(tag.into()), after, limit)
    }

    /// Documents whose `name` is a string starting with `prefix`, by name
    /// then CID, from after the cursor `after` (a previous page's `next`).
    pub fn name_prefix(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Found, String> {
        let Some(entries) = self.table.get("name") else {
            return Ok(Found::default());
        };
        // Escaping is per character, so the JSON text of every name that
        // starts with `prefix` starts with the prefix's text, open-ended.
        let mut start = Value::String(prefix.into()).to_string();
        start.pop();
        let from = match after.map(parse_cursor).transpose()? {
            Some((cid, text)) if (text, cid) >= (start.as_str(), "") => {
                Excluded((text.into(), cid.into()))
            }
            _ => Included((start.as_str().into(), "".into())),
        };
        let hits = entries
            .range::<(Arc<str>, Arc<str>), _>((from, Unbounded))
            .take_while(|(text, _)| text.starts_with(&start))
            // An element of a `name` array is not a name.
            .filter(|(text, cid)| {
                self.docs
                    .get(cid)
                    .and_then(|doc| doc.get("name"))
                    .is_some_and(|name| name == text)
            });
        let (hits, more) = take_page(hits, limit);
        Ok(Found {
            next: hits
                .last()
                .filter(|_| more)
                .map(|(text, cid)| format!("{cid}/{text}")),
            items: hits.into_iter().filter_map(|(_, c)| self.item(c)).collect(),
        })
    }

    /// Every document by CID, from after the CID `after`.
    pub fn list(&self, after: Option<&str>, limit: usize) -> Found {
        let from = after.map_or(Unbounded, Excluded);
        let cids = self
            .docs
            .range::<str, _>((from, Unbounded))
            .map(|(cid, _)| cid);
        let (cids, more) = take_page(cids, limit);
        Found {
            next: cids.last().filter(|_| more).map(|c| c.to_string()),
            items: cids.into_iter().filter_map(|c| self.item(c)).collect(),
        }
    }

    pub fn stats(&self) -> MetadataStats {
        MetadataStats {
            documents: self.docs.len() as u64,
            fields: self.fields,
        }
    }

    fn item(&self, cid: &str) -> Option<(String, Doc)> {
        Some((cid.to_string(), self.get(cid)?))
    }
}

/// The table keys of a value: its text, and for an array its elements'.
fn index_keys(value: &Value, text: &Arc<str>) -> Vec<Arc<str>> {
    let mut keys = vec![text.clone()];
    if let Value::Array(items) = value {
        keys.extend(items.iter().map(|v| Arc::from(v.to_string())));
    }
    keys
}

fn parse_doc(fields: &BTreeMap<Box<str>, Arc<str>>) -> Doc {
    fields
        .iter()
        // The texts were made by serializing parsed values: they parse.
        .filter_map(|(f, text)| Some((f.to_string(), serde_json::from_str(text).ok()?)))
        .collect()
}

/// `(cid, name text)` of a name query's cursor.
fn parse_cursor(cursor: &str) -> Result<(&str, &str), String> {
    match cursor.split_once('/') {
        Some((cid, text)) if !cid.is_empty() && text.starts_with('"') => Ok((cid, text)),
        _ => Err(format!("malformed metadata cursor {cursor:?}")),
    }
}

/// Up to a page of hits, and whether more remain.
fn take_page<T>(hits: impl Iterator<Item = T>, limit: usize) -> (Vec<T>, bool) {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut page: Vec<T> = hits.take(limit + 1).collect();
    let more = page.len() > limit;
    page.truncate(limit);
    (page, more)
}

#[cfg(test)]
mod tests;
