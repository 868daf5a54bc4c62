//! The in-memory form of the routing table and the lookup rules both backends share.
//!
//! Lookup order (deterministic, whatever order routes were inserted in):
//! 1. the exact number as dialled, then the same number with its leading `+` added or
//!    removed;
//! 2. patterns that match the whole number, highest `priority` first, then the longest
//!    pattern, then the pattern text, then the owner.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;
use tracing::warn;

use crate::route::{Route, RouteKey};
use crate::validate::compile_pattern;

struct CompiledPattern {
    regex: Regex,
    route: Arc<Route>,
}

/// An immutable snapshot of the routing table. Backends swap whole snapshots, so a
/// lookup always sees one consistent table.
#[derive(Default)]
pub struct RouteTable {
    numbers: HashMap<String, Arc<Route>>,
    /// Sorted in lookup order.
    patterns: Vec<CompiledPattern>,
}

impl RouteTable {
    /// Builds a table. A later route with the same key replaces an earlier one; a pattern
    /// that does not compile is skipped with a warning (writers validate before writing,
    /// so this only happens when the table was edited by hand).
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Self {
        let mut numbers = HashMap::new();
        let mut patterns: HashMap<String, CompiledPattern> = HashMap::new();
        for route in routes {
            match &route.key {
                RouteKey::Number(number) => {
                    numbers.insert(number.clone(), Arc::new(route));
                }
                RouteKey::Pattern(pattern) => match compile_pattern(pattern) {
                    Ok(regex) => {
                        patterns.insert(
                            pattern.clone(),
                            CompiledPattern {
                                regex,
                                route: Arc::new(route),
                            },
                        );
                    }
                    Err(error) => {
                        warn!(%pattern, owner = %route.owner, %error, "skipping route with an invalid pattern")
                    }
                },
            }
        }
        let mut patterns: Vec<CompiledPattern> = patterns.into_values().collect();
        patterns.sort_by(|a, b| {
            let key = |p: &CompiledPattern| {
                let pattern = match &p.route.key {
                    RouteKey::Pattern(pattern) => pattern.clone(),
                    RouteKey::Number(_) => String::new(),
                };
                (
                    Reverse(p.route.priority),
                    Reverse(pattern.len()),
                    pattern,
                    p.route.owner.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        RouteTable { numbers, patterns }
    }

    /// The route for a dialled number (the Request-URI user part), if any.
    pub fn lookup(&self, dialled: &str) -> Option<Arc<Route>> {
        if let Some(route) = self.numbers.get(dialled) {
            return Some(route.clone());
        }
        let toggled = match dialled.strip_prefix('+') {
            Some(bare) => bare.to_owned(),
            None => format!("+{dialled}"),
        };
        if let Some(route) = self.numbers.get(&toggled) {
            return Some(route.clone());
        }
        self.patterns
            .iter()
            .find(|p| p.regex.is_match(dialled))
            .map(|p| p.route.clone())
    }

    /// Every route, numbers first (sorted), then patterns in lookup order.
    pub fn routes(&self) -> Vec<Arc<Route>> {
        let mut numbers: Vec<_> = self.numbers.values().cloned().collect();
        numbers.sort_by(|a, b| a.key.cmp(&b.key));
        numbers.extend(self.patterns.iter().map(|p| p.route.clone()));
        numbers
    }

    pub fn len(&self) -> usize {
        self.numbers.len() + self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many routes of each kind: `(numbers, patterns)`.
    pub fn counts(&self) -> (usize, usize) {
        (self.numbers.len(), self.patterns.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::HttpMethod;
    use crate::route::{AppUrl, Owner};

    fn route(key: RouteKey, owner: &str, priority: i32) -> Route {
        Route {
            key,
            owner: Owner(owner.into()),
            priority,
            friendly_name: None,
            voice: AppUrl {
                url: format!("http://apps.example/{owner}.xml"),
                method: HttpMethod::Post,
            },
            voice_fallback: None,
            refer: None,
            status_callback: None,
            refer_target_allow: Vec::new(),
        }
    }

    fn number(n: &str, owner: &str) -> Route {
        route(RouteKey::Number(n.into()), owner, 0)
    }

    fn pattern(p: &str, owner: &str, priority: i32) -> Route {
        route(RouteKey::Pattern(p.into()), owner, priority)
    }

    fn owner_of(table: &RouteTable, dialled: &str) -> Option<String> {
        table.lookup(dialled).map(|r| r.owner.0.clone())
    }

    #[test]
    fn exact_number_matches_with_and_without_plus() {
        let table = RouteTable::new([number("+15551230001", "a"), number("15551230002", "b")]);
        assert_eq!(owner_of(&table, "+15551230001").as_deref(), Some("a"));
        assert_eq!(owner_of(&table, "15551230001").as_deref(), Some("a"));
        assert_eq!(owner_of(&table, "15551230002").as_deref(), Some("b"));
        assert_eq!(owner_of(&table, "+15551230002").as_deref(), Some("b"));
        assert_eq!(owner_of(&table, "15551230003"), None);
    }

    #[test]
    fn the_number_as_dialled_wins_over_its_plus_twin() {
        let table = RouteTable::new([number("+1555", "plus"), number("1555", "bare")]);
        assert_eq!(owner_of(&table, "+1555").as_deref(), Some("plus"));
        assert_eq!(owner_of(&table, "1555").as_deref(), Some("bare"));
    }

    #[test]
    fn exact_numbers_win_over_patterns() {
        let table = RouteTable::new([pattern("1555.*", "p", 100), number("15551230001", "n")]);
        assert_eq!(owner_of(&table, "15551230001").as_deref(), Some("n"));
        assert_eq!(owner_of(&table, "15551230009").as_deref(), Some("p"));
    }

    #[test]
    fn patterns_by_priority_then_longest_then_text() {
        let routes = vec![
            pattern("1.*", "short", 0),
            pattern("1555.*", "long", 0),
            pattern("15.*", "urgent", 5),
            pattern("1556.*", "twin", 0),
        ];
        let table = RouteTable::new(routes.clone());
        assert_eq!(owner_of(&table, "15551234").as_deref(), Some("urgent"));
        assert_eq!(owner_of(&table, "1999").as_deref(), Some("short"));

        let table = RouteTable::new(routes.into_iter().filter(|r| r.owner.0 != "urgent"));
        assert_eq!(owner_of(&table, "15551234").as_deref(), Some("long"));
        assert_eq!(owner_of(&table, "15561234").as_deref(), Some("twin"));
    }

    #[test]
    fn lookup_does_not_depend_on_insertion_order() {
        let routes = vec![
            pattern("1(55|66).*", "x", 0),
            pattern("1[56]{2}.*", "y", 0),
            pattern("1.*", "z", 0),
        ];
        let forward = RouteTable::new(routes.clone());
        let backward = RouteTable::new(routes.into_iter().rev());
        for dialled in ["1551", "1661", "1561", "1000"] {
            assert_eq!(owner_of(&forward, dialled), owner_of(&backward, dialled));
        }
        // Equal priority and length: the pattern text decides ("1(55|66).*" < "1[56]{2}.*").
        assert_eq!(owner_of(&forward, "1551").as_deref(), Some("x"));
    }

    #[test]
    fn an_invalid_pattern_is_skipped_not_fatal() {
        let table = RouteTable::new([pattern("1555(", "bad", 0), number("1", "ok")]);
        assert_eq!(table.counts(), (1, 0));
        assert_eq!(owner_of(&table, "1").as_deref(), Some("ok"));
    }
}
