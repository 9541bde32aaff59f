//! Matching a request to a route: routes with an exact `host` are tried
//! first, then host-less routes; within each, the longest `path_prefix`
//! wins (plain string prefix, as nginx `location` and Envoy `prefix` do;
//! between equal prefixes, the first in the config).
//!
//! **Cost.** A host is one hash lookup. A host's prefixes (or the
//! host-less ones) are tried in turn while they are few; past
//! [`FEW`], a byte trie finds the longest in one walk of the path, so a
//! request costs the same with ten thousand routes as with ten.

use std::collections::HashMap;

use super::Route;

/// Up to this many prefixes are tried in turn (a few `starts_with` cost
/// less than a walk of the path); more get a trie.
const FEW: usize = 16;

/// Routes of one snapshot, indexed for matching.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
    /// Per host: its routes by prefix.
    by_host: HashMap<Box<str>, Prefixes>,
    /// Host-less routes by prefix.
    any_host: Prefixes,
}

/// Route indices by path prefix.
#[derive(Debug)]
enum Prefixes {
    /// Longest prefix first.
    Few(Vec<usize>),
    Trie(Trie),
}

impl Default for Prefixes {
    fn default() -> Self {
        Prefixes::Few(Vec::new())
    }
}

impl Prefixes {
    /// `list` in config order; `prefix` of each.
    fn new<'r>(list: Vec<usize>, prefix: impl Fn(usize) -> &'r str) -> Prefixes {
        if list.len() <= FEW {
            let mut list = list;
            // Stable: equal prefixes keep the config's order.
            list.sort_by_key(|&i| std::cmp::Reverse(prefix(i).len()));
            return Prefixes::Few(list);
        }
        let mut trie = Trie { nodes: vec![Node::default()] };
        for i in list {
            trie.insert(prefix(i).as_bytes(), i);
        }
        Prefixes::Trie(trie)
    }

    /// The route with the longest prefix of `path`.
    fn find(&self, routes: &[Route], path: &str) -> Option<usize> {
        match self {
            Prefixes::Few(list) => list.iter().copied().find(|&i| path.starts_with(&*routes[i].path_prefix)),
            Prefixes::Trie(t) => t.longest(path.as_bytes()),
        }
    }
}

/// A byte trie of prefixes: each node may end a prefix (its route).
#[derive(Debug)]
struct Trie {
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    /// The first route (in config order) whose prefix ends here.
    route: Option<usize>,
    /// Next byte and its node, sorted by byte.
    next: Vec<(u8, u32)>,
}

impl Trie {
    fn insert(&mut self, prefix: &[u8], route: usize) {
        let mut at = 0;
        for &b in prefix {
            at = match self.nodes[at].next.binary_search_by_key(&b, |e| e.0) {
                Ok(k) => self.nodes[at].next[k].1 as usize,
                Err(k) => {
                    let new = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[at].next.insert(k, (b, new as u32));
                    new
                }
            };
        }
        self.nodes[at].route.get_or_insert(route);
    }

    fn longest(&self, path: &[u8]) -> Option<usize> {
        let mut at = 0;
        let mut best = self.nodes[0].route;
        for &b in path {
            let next = &self.nodes[at].next;
            let k = match next.len() {
                0 => break,
                // Most nodes of real prefixes have one way on.
                1 if next[0].0 == b => 0,
                1 => break,
                _ => match next.binary_search_by_key(&b, |e| e.0) {
                    Ok(k) => k,
                    Err(_) => break,
                },
            };
            at = next[k].1 as usize;
            best = self.nodes[at].route.or(best);
        }
        best
    }
}

impl RouteTable {
    pub(crate) fn new(routes: Vec<Route>) -> Self {
        let mut hosts: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut any_host = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            match &r.host {
                Some(h) => hosts.entry(h.clone()).or_default().push(i),
                None => any_host.push(i),
            }
        }
        let prefix = |i: usize| &*routes[i].path_prefix;
        let by_host = hosts.into_iter().map(|(h, list)| (h, Prefixes::new(list, prefix))).collect();
        let any_host = Prefixes::new(any_host, prefix);
        RouteTable { routes, by_host, any_host }
    }

    pub(crate) fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route for `host` (may carry a port; any case) and `path`.
    pub(crate) fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        let first = |p: &Prefixes| p.find(&self.routes, path).map(|i| &self.routes[i]);
        if !self.by_host.is_empty() {
            if let Some(host) = host.map(strip_port) {
                let hit = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                    self.by_host.get(host.to_ascii_lowercase().as_str())
                } else {
                    self.by_host.get(host)
                };
                if let Some(route) = hit.and_then(first) {
                    return Some(route);
                }
            }
        }
        first(&self.any_host)
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trie picks what trying every prefix, longest first (the first
    /// in config order between equal ones), picks.
    #[test]
    fn the_trie_finds_the_longest_prefix_as_a_scan_does() {
        let prefixes: Vec<String> = (0..300)
            .map(|i| match i % 5 {
                0 => format!("/svc{}/", i / 5),
                1 => format!("/svc{}/api", i / 5),
                2 => format!("/s{}", i % 7),
                3 => "/".to_string(),
                _ => format!("/svc{}/api/v{}", i / 5, i % 3),
            })
            .collect();
        let list: Vec<usize> = (0..prefixes.len()).collect();
        let trie = Prefixes::new(list.clone(), |i| &prefixes[i]);
        assert!(matches!(trie, Prefixes::Trie(_)));
        let mut scan = list;
        scan.sort_by_key(|&i| std::cmp::Reverse(prefixes[i].len()));
        let want = |path: &str| scan.iter().copied().find(|&i| path.starts_with(&prefixes[i]));
        let Prefixes::Trie(t) = &trie else { unreachable!() };
        for path in
            ["/", "", "/svc1/", "/svc1/api/v2/x", "/svc12/api", "/s3x", "/svc59/api/v1", "/nope", "/svc1", "/svc100/"]
        {
            assert_eq!(t.longest(path.as_bytes()), want(path), "{path}");
        }
        for p in &prefixes {
            for cut in [p.len(), p.len().saturating_sub(1)] {
                let path = format!("{}zz", &p[..cut]);
                assert_eq!(t.longest(path.as_bytes()), want(&path), "{path}");
            }
        }
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
