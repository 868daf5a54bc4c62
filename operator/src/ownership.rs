//! Who owns a number or a pattern when several PhoneNumbers claim it.
//!
//! Pure functions over the watch cache, so the rule is unit tested and the same for a
//! single reconcile and for a full sync: among the live resources with a valid spec that
//! claim one key, the oldest wins (`creationTimestamp`, then `namespace/name`). The
//! others report `Ready=False, reason=Conflict` and take over by themselves when the owner
//! goes away, because the next decision no longer sees it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use switchyard_routing::validate::{FieldError, validate_spec};
use switchyard_routing::{Owner, PhoneNumber, Route, RouteKey};

use crate::FINALIZER;

/// The owner reference a resource writes under: `namespace/name`.
pub fn owner_of(pn: &PhoneNumber) -> Owner {
    Owner::new(&pn.namespace().unwrap_or_default(), &pn.name_any())
}

/// What decides between two claims: older first, then `namespace/name`. A resource
/// without a creation timestamp (never the case for one read from the API) sorts last.
fn precedence(pn: &PhoneNumber) -> (bool, Option<Timestamp>, Owner) {
    let created = pn.creation_timestamp().map(|t| t.0);
    (created.is_none(), created, owner_of(pn))
}

/// The key a spec names, valid or not. Cheap: no regex is compiled.
pub fn declared_key(pn: &PhoneNumber) -> Option<RouteKey> {
    match (&pn.spec.phone_number, &pn.spec.pattern) {
        (Some(number), None) => Some(RouteKey::Number(number.clone())),
        (None, Some(pattern)) => Some(RouteKey::Pattern(pattern.clone())),
        _ => None,
    }
}

/// The key a resource claims, if it claims one: it is not being deleted and its spec is
/// valid.
pub fn claimed_key(pn: &PhoneNumber) -> Option<RouteKey> {
    if pn.metadata.deletion_timestamp.is_some() || validate_spec(&pn.spec).is_err() {
        return None;
    }
    declared_key(pn)
}

/// Whether `pn` claims `key`. Validates (compiles a pattern) only when the key matches,
/// so checking every resource against one key stays cheap.
pub fn claims(pn: &PhoneNumber, key: &RouteKey) -> bool {
    declared_key(pn).as_ref() == Some(key) && claimed_key(pn).is_some()
}

/// What one resource should be, given every resource the operator sees.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It owns its key: this route belongs in the table.
    Owns(Route),
    /// Another, older resource owns the key.
    Conflict { key: RouteKey, holder: Owner },
    /// The spec cannot be programmed.
    Invalid(Vec<FieldError>),
}

/// Decides `pn`'s outcome against `all` (which may or may not contain `pn` itself).
pub fn decide(pn: &PhoneNumber, all: &[Arc<PhoneNumber>]) -> Outcome {
    if let Err(errors) = validate_spec(&pn.spec) {
        return Outcome::Invalid(errors);
    }
    let me = owner_of(pn);
    let Some(route) = Route::from_spec(me.clone(), &pn.spec) else {
        // validate_spec accepts only specs from which a route can be built.
        return Outcome::Invalid(Vec::new());
    };
    let mine = precedence(pn);
    let older = all
        .iter()
        .filter(|other| claims(other, &route.key))
        .filter(|other| owner_of(other) != me)
        .map(|other| precedence(other))
        .filter(|theirs| *theirs < mine)
        .min();
    match older {
        Some((_, _, holder)) => Outcome::Conflict {
            key: route.key,
            holder,
        },
        None => Outcome::Owns(route),
    }
}

/// Every other resource that claims `key`, oldest first.
pub fn claimants<'a>(
    key: &RouteKey,
    all: &'a [Arc<PhoneNumber>],
) -> impl Iterator<Item = &'a Arc<PhoneNumber>> {
    let mut found: Vec<&Arc<PhoneNumber>> = all.iter().filter(|pn| claims(pn, key)).collect();
    found.sort_by_key(|pn| precedence(pn));
    found.into_iter()
}

/// The whole table the cluster declares, for a full sync.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Resolution {
    /// One route per key, from its owner. Only resources that carry the finalizer are
    /// included: a route is written only once its removal on delete is guaranteed.
    pub routes: Vec<Route>,
    /// Resources that lose a key to an older one.
    pub conflicts: BTreeMap<Owner, Owner>,
    /// Resources whose spec is invalid.
    pub invalid: BTreeSet<Owner>,
}

impl Resolution {
    /// Whether `owner`'s route is in the table.
    pub fn programs(&self, owner: &Owner) -> bool {
        self.routes.iter().any(|r| &r.owner == owner)
    }
}

/// Resolves every claim at once.
pub fn resolve(all: &[Arc<PhoneNumber>]) -> Resolution {
    let mut winners: BTreeMap<RouteKey, &Arc<PhoneNumber>> = BTreeMap::new();
    let mut resolution = Resolution::default();
    let mut ordered: Vec<&Arc<PhoneNumber>> = all
        .iter()
        .filter(|pn| pn.metadata.deletion_timestamp.is_none())
        .collect();
    ordered.sort_by_key(|pn| precedence(pn));
    for pn in ordered {
        match claimed_key(pn) {
            None => {
                resolution.invalid.insert(owner_of(pn));
            }
            Some(key) => match winners.get(&key) {
                Some(holder) => {
                    resolution.conflicts.insert(owner_of(pn), owner_of(holder));
                }
                None => {
                    winners.insert(key, pn);
                }
            },
        }
    }
    resolution.routes = winners
        .into_values()
        .filter(|pn| pn.finalizers().iter().any(|f| f == FINALIZER))
        .filter_map(|pn| Route::from_spec(owner_of(pn), &pn.spec))
        .collect();
    resolution
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use switchyard_routing::{HttpMethod, PhoneNumberSpec};

    pub fn spec(number: Option<&str>, pattern: Option<&str>) -> PhoneNumberSpec {
        PhoneNumberSpec {
            phone_number: number.map(str::to_string),
            pattern: pattern.map(str::to_string),
            priority: None,
            friendly_name: None,
            voice_url: "http://apps.example/voice.xml".into(),
            voice_method: HttpMethod::Post,
            voice_fallback_url: None,
            voice_fallback_method: HttpMethod::Post,
            refer_url: None,
            refer_method: HttpMethod::Post,
            status_callback: None,
            refer_target_allow: Vec::new(),
        }
    }

    fn pn(ns: &str, name: &str, created: i64, spec: PhoneNumberSpec) -> Arc<PhoneNumber> {
        let mut pn = PhoneNumber::new(name, spec);
        pn.metadata.namespace = Some(ns.into());
        pn.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        pn.metadata.finalizers = Some(vec![FINALIZER.into()]);
        Arc::new(pn)
    }

    fn number(ns: &str, name: &str, created: i64, n: &str) -> Arc<PhoneNumber> {
        pn(ns, name, created, spec(Some(n), None))
    }

    #[test]
    fn a_lone_claim_owns_its_key() {
        let a = number("t", "a", 100, "+1555");
        match decide(&a, std::slice::from_ref(&a)) {
            Outcome::Owns(route) => {
                assert_eq!(route.key, RouteKey::Number("+1555".into()));
                assert_eq!(route.owner, Owner("t/a".into()));
            }
            other => panic!("expected Owns, got {other:?}"),
        }
    }

    #[test]
    fn the_older_resource_wins_whatever_the_order() {
        let old = number("z", "old", 100, "+1555");
        let new = number("a", "new", 200, "+1555");
        for all in [
            vec![old.clone(), new.clone()],
            vec![new.clone(), old.clone()],
        ] {
            assert!(matches!(decide(&old, &all), Outcome::Owns(_)));
            assert_eq!(
                decide(&new, &all),
                Outcome::Conflict {
                    key: RouteKey::Number("+1555".into()),
                    holder: Owner("z/old".into())
                }
            );
        }
    }

    #[test]
    fn same_age_is_decided_by_namespace_then_name() {
        let b = number("lab", "b", 100, "+1555");
        let a = number("lab", "a", 100, "+1555");
        let other_ns = number("aaa", "z", 100, "+1555");
        let all = vec![b.clone(), a.clone(), other_ns.clone()];
        assert!(matches!(decide(&other_ns, &all), Outcome::Owns(_)));
        assert!(
            matches!(decide(&a, &all), Outcome::Conflict { holder, .. } if holder.0 == "aaa/z")
        );
        assert!(matches!(decide(&b, &all), Outcome::Conflict { .. }));
    }

    #[test]
    fn patterns_conflict_on_the_same_text_only() {
        let p1 = pn("t", "p1", 100, spec(None, Some("1555.*")));
        let p2 = pn("t", "p2", 200, spec(None, Some("1555.*")));
        let p3 = pn("t", "p3", 300, spec(None, Some("1666.*")));
        let n = number("t", "n", 50, "1555.*");
        let all = vec![p1.clone(), p2.clone(), p3.clone(), n];
        assert!(matches!(decide(&p1, &all), Outcome::Owns(_)));
        assert!(matches!(decide(&p2, &all), Outcome::Conflict { .. }));
        assert!(matches!(decide(&p3, &all), Outcome::Owns(_)));
    }

    #[test]
    fn a_deleted_or_invalid_owner_releases_the_key() {
        let mut deleting = (*number("t", "old", 100, "+1555")).clone();
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(300).unwrap()));
        let invalid = pn("t", "older", 50, spec(Some("+1555"), Some("(")));
        let new = number("t", "new", 200, "+1555");
        let all = vec![Arc::new(deleting), invalid.clone(), new.clone()];
        assert!(matches!(decide(&new, &all), Outcome::Owns(_)));
        assert!(
            matches!(decide(&invalid, &all), Outcome::Invalid(e) if e[0].field == "phoneNumber")
        );
    }

    #[test]
    fn an_invalid_regex_is_reported_on_the_pattern_field() {
        let bad = pn("t", "bad", 100, spec(None, Some("1555(")));
        match decide(&bad, &[]) {
            Outcome::Invalid(errors) => assert_eq!(errors[0].field, "pattern"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn resolve_builds_one_route_per_key_and_lists_conflicts() {
        let old = number("t", "old", 100, "+1555");
        let new = number("t", "new", 200, "+1555");
        let other = number("t", "other", 300, "+1666");
        let bad = pn("t", "bad", 100, spec(None, Some("(")));
        let mut unfinalized = (*number("t", "fresh", 400, "+1777")).clone();
        unfinalized.metadata.finalizers = None;
        let r = resolve(&[new, bad, other, old, Arc::new(unfinalized)]);
        let owners: Vec<&str> = r.routes.iter().map(|r| r.owner.0.as_str()).collect();
        assert_eq!(owners, ["t/old", "t/other"]);
        assert_eq!(
            r.conflicts.into_iter().collect::<Vec<_>>(),
            [(Owner("t/new".into()), Owner("t/old".into()))]
        );
        assert_eq!(
            r.invalid.into_iter().collect::<Vec<_>>(),
            [Owner("t/bad".into())]
        );
    }

    #[test]
    fn claimants_are_listed_oldest_first() {
        let a = number("t", "a", 300, "+1555");
        let b = number("t", "b", 100, "+1555");
        let c = number("t", "c", 200, "+1666");
        let all = vec![a, b, c];
        let names: Vec<String> = claimants(&RouteKey::Number("+1555".into()), &all)
            .map(|pn| pn.name_any())
            .collect();
        assert_eq!(names, ["b", "a"]);
    }
}
