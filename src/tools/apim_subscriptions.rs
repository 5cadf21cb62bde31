//! Subscriptions as Azure API Management's management API returns them, read for
//! `portcullis subscriptions import` (issue 25): a JSON array, or an object whose `value` is
//! one (a list answer), of subscription contracts
//! `{ "name": SID, "properties": { "displayName", "scope", "state", "expirationDate"?,
//! "ownerId"?, "createdDate"?, "primaryKey"?, "secondaryKey"? } }`, the keys also taken from a
//! sibling `"listSecrets": { "primaryKey", "secondaryKey" }` (the `listSecrets` answer, since
//! a plain GET leaves the keys out).
//!
//! Scopes: `…/products/{p}` is `product:p`, `…/apis/{a}` is `route:a`, `…/apis` (all APIs)
//! or the service itself is `all`. States: `active`, `suspended`, `cancelled` and `expired`
//! are kept; `submitted` and `rejected` (APIM's approval workflow: the keys never worked) are
//! refused, naming the subscription. `ownerId …/users/{u}` is the owner `user:u`.

use serde::Deserialize;

use crate::store::{ImportedSubscription, Owner, SubscriptionScope, SubscriptionState};

/// The file, in either shape.
#[derive(Deserialize)]
#[serde(untagged)]
enum File {
    List(Vec<Contract>),
    Page { value: Vec<Contract> },
}

/// One subscription contract.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Contract {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    properties: Properties,
    #[serde(default)]
    list_secrets: Option<Secrets>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Properties {
    display_name: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    expiration_date: Option<String>,
    created_date: Option<String>,
    owner_id: Option<String>,
    primary_key: Option<String>,
    secondary_key: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Secrets {
    primary_key: Option<String>,
    secondary_key: Option<String>,
}

/// A contract that cannot be imported: which one (its `name`, or its position) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The subscription's id, or `#N` (from 1) when it has none.
    pub id: String,
    /// Why, and what to do.
    pub reason: String,
}

/// Reads an APIM subscriptions file: each contract as a subscription to import, or why not.
///
/// # Errors
/// The text is not JSON in either shape (says where).
pub fn read(json: &str) -> Result<Vec<Result<ImportedSubscription, Refused>>, String> {
    let file: File = serde_json::from_str(json).map_err(|e| {
        format!("not an APIM subscription list (a JSON array, or an object with \"value\": [...]): {e}")
    })?;
    let contracts = match file {
        File::List(list) | File::Page { value: list } => list,
    };
    Ok(contracts.into_iter().enumerate().map(|(i, c)| contract(i, c)).collect())
}

fn contract(index: usize, c: Contract) -> Result<ImportedSubscription, Refused> {
    let Some(id) = c.name.filter(|n| !n.is_empty()) else {
        return Err(Refused {
            id: format!("#{}", index + 1),
            reason: "it has no \"name\" (the subscription id)".into(),
        });
    };
    let refuse = |reason: String| Refused { id: id.clone(), reason };
    let p = c.properties;
    let secrets = c.list_secrets.unwrap_or_default();
    let scope_text = p.scope.ok_or_else(|| refuse("it has no properties.scope".into()))?;
    let scope = scope(&scope_text)
        .ok_or_else(|| refuse(format!("scope {scope_text:?} is not a product, an API, all APIs or the service")))?;
    let state_text = p.state.unwrap_or_else(|| "active".to_owned());
    let state = match state_text.to_ascii_lowercase().as_str() {
        "active" => SubscriptionState::Active,
        "suspended" => SubscriptionState::Suspended,
        "cancelled" => SubscriptionState::Cancelled,
        "expired" => SubscriptionState::Expired,
        "submitted" | "rejected" => {
            return Err(refuse(format!(
                "its state is {state_text:?}: APIM never approved it, so no caller holds a working key; \
                 approve it in APIM and export again, or leave it out"
            )))
        }
        _ => return Err(refuse(format!("unknown state {state_text:?}"))),
    };
    let expires_at = match p.expiration_date.as_deref() {
        Some(text) => Some(parse_time(text).ok_or_else(|| refuse(format!("expirationDate {text:?} is not a date")))?),
        None => None,
    };
    let created_at = p.created_date.as_deref().and_then(parse_time);
    let missing = |which: &str| {
        refuse(format!(
            "it has no {which}: add the listSecrets answer as \"listSecrets\" beside \"properties\" \
             (POST …/subscriptions/{id}/listSecrets)"
        ))
    };
    let primary_key = secrets.primary_key.or(p.primary_key).ok_or_else(|| missing("primaryKey"))?;
    let secondary_key = secrets.secondary_key.or(p.secondary_key).ok_or_else(|| missing("secondaryKey"))?;
    let owner = p.owner_id.as_deref().and_then(owner);
    Ok(ImportedSubscription {
        name: p.display_name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| id.clone()),
        id,
        scope,
        state,
        expires_at,
        owner,
        created_at,
        primary_key,
        secondary_key,
    })
}

/// An APIM scope as a subscription scope: the last `products/{p}` or `apis/{a}` of the
/// resource path; `…/apis` alone, the service and `/` are every route.
fn scope(text: &str) -> Option<SubscriptionScope> {
    let segments: Vec<&str> = text.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] => Some(SubscriptionScope::All),
        [.., kind, name] if kind.eq_ignore_ascii_case("products") => {
            Some(SubscriptionScope::Product((*name).to_owned()))
        }
        [.., kind, name] if kind.eq_ignore_ascii_case("apis") => Some(SubscriptionScope::Route((*name).to_owned())),
        [.., last] if last.eq_ignore_ascii_case("apis") => Some(SubscriptionScope::All),
        [.., kind, _] if kind.eq_ignore_ascii_case("service") => Some(SubscriptionScope::All),
        _ => None,
    }
}

/// `…/users/{u}` as the user `u`; other owners (none else exist in APIM) as none.
fn owner(text: &str) -> Option<Owner> {
    let segments: Vec<&str> = text.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [.., kind, id] if kind.eq_ignore_ascii_case("users") => Some(Owner::User((*id).to_owned())),
        _ => None,
    }
}

/// An RFC 3339 time as APIM writes it (`2027-01-31T00:00:00Z`, with or without fractions;
/// an offset, or none for UTC), or a bare date; as Unix seconds.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, rest) = text.split_at(text.find(['T', 't', ' ']).unwrap_or(text.len()));
    let mut parts = date.split('-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    let date = time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    let rest = rest.get(1..).unwrap_or("");
    let (clock, offset) = match rest.find(['Z', 'z', '+', '-']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let clock = clock.split('.').next().unwrap_or("");
    let time = if clock.is_empty() {
        time::Time::MIDNIGHT
    } else {
        let mut hms = clock.split(':').map(str::parse::<u8>);
        let (h, m) = (hms.next()?.ok()?, hms.next()?.ok()?);
        let s = hms.next().transpose().ok()?.unwrap_or(0);
        time::Time::from_hms(h, m, s).ok()?
    };
    let offset_seconds: i64 = match offset {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let (h, m) = offset[1..].split_once(':')?;
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    Some(time::PrimitiveDateTime::new(date, time).assume_utc().unix_timestamp() - offset_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_map_as_apim_means_them() {
        let service = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ApiManagement/service/contoso";
        let cases = [
            (format!("{service}/products/starter"), Some(SubscriptionScope::Product("starter".into()))),
            (format!("{service}/apis/echo-api"), Some(SubscriptionScope::Route("echo-api".into()))),
            (format!("{service}/apis"), Some(SubscriptionScope::All)),
            (service.to_owned(), Some(SubscriptionScope::All)),
            ("/products/unlimited".to_owned(), Some(SubscriptionScope::Product("unlimited".into()))),
            ("/apis".to_owned(), Some(SubscriptionScope::All)),
            ("/".to_owned(), Some(SubscriptionScope::All)),
            (format!("{service}/groups/devs"), None),
        ];
        for (text, expected) in cases {
            assert_eq!(scope(&text), expected, "{text}");
        }
        assert_eq!(
            owner("/subscriptions/0/resourceGroups/rg/service/s/users/alice"),
            Some(Owner::User("alice".into()))
        );
        assert_eq!(owner("/subscriptions/0/service/s"), None);
    }

    #[test]
    fn times_are_read_as_apim_writes_them() {
        assert_eq!(parse_time("1970-01-02T00:00:00Z"), Some(86_400));
        assert_eq!(parse_time("1970-01-02T00:00:00.317Z"), Some(86_400));
        assert_eq!(parse_time("1970-01-02T01:00:00+01:00"), Some(86_400));
        assert_eq!(parse_time("1970-01-02T00:00:00"), Some(86_400));
        assert_eq!(parse_time("1970-01-02"), Some(86_400));
        assert_eq!(parse_time("2027-02-30T00:00:00Z"), None);
        assert_eq!(parse_time("tomorrow"), None);
    }

    #[test]
    fn keys_come_from_list_secrets_or_the_properties_and_unapproved_states_are_refused() {
        let json = r#"{ "value": [
            { "name": "a", "properties": { "displayName": "A", "scope": "/apis", "state": "active" },
              "listSecrets": { "primaryKey": "p1", "secondaryKey": "s1" } },
            { "name": "b", "properties": { "scope": "/products/x", "state": "suspended",
              "primaryKey": "p2", "secondaryKey": "s2", "expirationDate": "1970-01-02T00:00:00Z",
              "ownerId": "/users/bob" } },
            { "name": "c", "properties": { "scope": "/apis", "state": "submitted" } },
            { "name": "d", "properties": { "scope": "/apis", "state": "active" } },
            { "properties": { "scope": "/apis" } }
        ] }"#;
        let read = read(json).unwrap();
        let a = read[0].as_ref().unwrap();
        assert_eq!((a.name.as_str(), a.primary_key.as_str(), &a.scope), ("A", "p1", &SubscriptionScope::All));
        let b = read[1].as_ref().unwrap();
        assert_eq!((b.name.as_str(), b.state, b.expires_at), ("b", SubscriptionState::Suspended, Some(86_400)));
        assert_eq!(b.owner, Some(Owner::User("bob".into())));
        let c = read[2].as_ref().unwrap_err();
        assert!(c.id == "c" && c.reason.contains("never approved"), "{c:?}");
        let d = read[3].as_ref().unwrap_err();
        assert!(d.reason.contains("listSecrets"), "{d:?}");
        assert_eq!(read[4].as_ref().unwrap_err().id, "#5");
        assert_eq!(super::read("[]").unwrap().len(), 0, "a bare array");
        assert!(super::read("{\"nope\": 1}").unwrap_err().contains("APIM subscription list"));
    }
}
