//! Plain reference readers the crate's answers are checked against.

#![allow(dead_code)] // each target uses its own part

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// A JSON object's members in order, duplicates kept; anything but an object is an error.
pub struct Members(pub Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Only;
        impl<'de> Visitor<'de> for Only {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Only)
    }
}

/// The one member named `name` of `json`, read as a JSON object of valid UTF-8. `Err(())` when
/// `json` is no such object or names it twice (a derived struct refuses a duplicate field).
pub fn member(json: &[u8], name: &str) -> Result<Option<serde_json::Value>, ()> {
    let text = std::str::from_utf8(json).map_err(|_| ())?;
    let Members(members) = serde_json::from_str(text).map_err(|_| ())?;
    let mut found = members
        .into_iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v);
    let first = found.next();
    if found.next().is_some() {
        return Err(());
    }
    Ok(first)
}
