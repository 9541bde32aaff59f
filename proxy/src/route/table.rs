//! Matching a request to a route: routes with an exact `host` are tried
//! first, then host-less routes; within each, the longest `path_prefix`
//! wins (plain string prefix, as nginx `location` and Envoy `prefix` do).

use std::collections::HashMap;

use super::Route;

/// Routes of one snapshot, indexed for matching.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
    /// Per host: indices into `routes`, longest prefix first.
    by_host: HashMap<Box<str>, Vec<usize>>,
    /// Host-less routes, longest prefix first.
    any_host: Vec<usize>,
}

impl RouteTable {
    pub(crate) fn new(routes: Vec<Route>) -> Self {
        let mut by_host: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut any_host = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            match &r.host {
                Some(h) => by_host.entry(h.clone()).or_default().push(i),
                None => any_host.push(i),
            }
        }
        let by_len = |v: &mut Vec<usize>| v.sort_by_key(|&i| std::cmp::Reverse(routes[i].path_prefix.len()));
        by_host.values_mut().for_each(by_len);
        by_len(&mut any_host);
        RouteTable { routes, by_host, any_host }
    }

    pub(crate) fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route for `host` (may carry a port; any case) and `path`.
    pub(crate) fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        let first = |list: &[usize]| list.iter().map(|&i| &self.routes[i]).find(|r| path.starts_with(&*r.path_prefix));
        if !self.by_host.is_empty() {
            if let Some(host) = host.map(strip_port) {
                let hit = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                    self.by_host.get(host.to_ascii_lowercase().as_str())
                } else {
                    self.by_host.get(host)
                };
                if let Some(route) = hit.and_then(|l| first(l)) {
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

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
