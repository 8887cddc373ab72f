//! Reading `access.toml`: one check per section, each reporting every mistake it finds with
//! its file, line, column and field, so `obgate policy check` lists them all at once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;
use toml::Spanned;

use super::{
    ConsentRule, DEFAULT_REFRESH_LIFETIME, METHODS, Policy, PolicyError, PolicyIssue, Rule,
    Upstream,
};
use crate::consent::Kind;
use crate::oauth::grants::GrantSettings;
use crate::oauth::{Scope, ScopeSet};
use crate::registry::Role;
use crate::resources::CONSENT_REQUIREMENTS;
use crate::resources::consents::Permission;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    tokens: RawTokens,
    #[serde(default)]
    authorization: RawAuthorization,
    roles: BTreeMap<String, Spanned<RawRole>>,
    #[serde(default)]
    upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    #[serde(default)]
    rate_limits: RawRateLimits,
    #[serde(default)]
    certificates: RawCertificates,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCertificates {
    /// A client certificate this close to expiry is flagged to the portal.
    expiry_warning_days: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRateLimits {
    /// Requests per client per minute, counted across every instance; absent: no limit.
    per_client_per_minute: Option<Spanned<u32>>,
    /// Per-client overrides, by client id.
    #[serde(default)]
    clients: BTreeMap<String, Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokens {
    access_token_lifetime_secs: Spanned<i64>,
    refresh_token_lifetime_secs: Option<Spanned<i64>>,
    #[serde(default)]
    refresh_token_rotation: bool,
    rotation_overlap_secs: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuthorization {
    #[serde(default)]
    require_signed_request_object: bool,
    request_uri_lifetime_secs: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Spanned<String>,
    timeout_secs: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    scopes: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    method: Spanned<String>,
    route: Spanned<String>,
    role: Spanned<String>,
    scope: Spanned<String>,
    consent: Option<Spanned<String>>,
    permissions: Option<Vec<Spanned<String>>>,
    upstream: Option<Spanned<String>>,
}

/// A core-banking system a route's requests are sent to instead of the sandbox bank.
/// The mistakes found so far in one file.
struct Issues<'a> {
    path: &'a Path,
    text: &'a str,
    found: Vec<PolicyIssue>,
}

impl Issues<'_> {
    fn issue(&self, span: std::ops::Range<usize>, field: &str, message: String) -> PolicyIssue {
        let (line, column) = line_col(self.text, span.start);
        PolicyIssue {
            file: self.path.to_path_buf(),
            line,
            column,
            field: field.to_string(),
            message,
        }
    }

    fn push(&mut self, span: std::ops::Range<usize>, field: &str, message: String) {
        let issue = self.issue(span, field, message);
        self.found.push(issue);
    }
}

pub(super) fn parse(
    path: &Path,
    text: &str,
    known_routes: &[(&str, &str)],
) -> Result<Policy, PolicyError> {
    let mut issues = Issues {
        path,
        text,
        found: Vec::new(),
    };
    let raw = syntax(&issues)?;
    let lifetimes = lifetimes(&mut issues, &raw);
    let (rate_limit, client_rate_limits) = rate_limits(&mut issues, &raw);
    let upstreams = upstreams(&mut issues, &raw);
    let role_scopes = roles(&mut issues, &raw);
    let rules = routes(&mut issues, &raw, known_routes, &role_scopes, &upstreams);
    let expiry_warning_days = expiry_warning_days(&mut issues, &raw);
    if !issues.found.is_empty() {
        return Err(PolicyError::Invalid(issues.found));
    }
    Ok(Policy {
        grants: GrantSettings {
            access_token_lifetime: lifetimes.access_token,
            refresh_token_lifetime: lifetimes.refresh_token,
            rotate_refresh_tokens: raw.tokens.refresh_token_rotation,
            rotation_overlap: lifetimes.rotation_overlap,
        },
        require_signed_request_object: raw.authorization.require_signed_request_object,
        request_uri_lifetime: lifetimes.request_uri,
        expiry_warning_days,
        rate_limit,
        client_rate_limits,
        role_scopes,
        rules,
    })
}

/// `[certificates] expiry_warning_days`: 1 to 365, 30 when absent.
const DEFAULT_EXPIRY_WARNING_DAYS: i64 = 30;

fn expiry_warning_days(issues: &mut Issues, raw: &RawPolicy) -> i64 {
    match &raw.certificates.expiry_warning_days {
        Some(d) if !(1..=365).contains(d.get_ref()) => {
            issues.push(
                d.span(),
                "certificates.expiry_warning_days",
                format!("{} is outside 1..=365 days", d.get_ref()),
            );
            0
        }
        Some(d) => *d.get_ref(),
        None => DEFAULT_EXPIRY_WARNING_DAYS,
    }
}

/// The TOML itself, into the raw sections; a syntax or type mistake names its field.
fn syntax(issues: &Issues) -> Result<RawPolicy, PolicyError> {
    let text = issues.text;
    toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        // The span of a misspelt key points at the key itself.
        let word = text.get(span.clone()).unwrap_or_default().trim();
        let is_key = !word.is_empty()
            && word.len() <= 64
            && word
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        // A mistyped value's span points at the value: name the key it belongs to.
        let field = field_at(text, span.start)
            .or_else(|| is_key.then(|| word.to_string()))
            .unwrap_or_else(|| "(syntax)".to_string());
        PolicyError::Invalid(vec![issues.issue(span, &field, e.message().to_string())])
    })
}

struct Lifetimes {
    access_token: i64,
    refresh_token: i64,
    request_uri: i64,
    rotation_overlap: i64,
}

/// `[tokens]` and `[authorization]` lifetimes, each within its allowed range.
fn lifetimes(issues: &mut Issues, raw: &RawPolicy) -> Lifetimes {
    let lifetime = &raw.tokens.access_token_lifetime_secs;
    if !(30..=3600).contains(lifetime.get_ref()) {
        issues.push(
            lifetime.span(),
            "tokens.access_token_lifetime_secs",
            format!("{} is outside 30..=3600 seconds", lifetime.get_ref()),
        );
    }
    let refresh_token = match &raw.tokens.refresh_token_lifetime_secs {
        Some(l) if !(300..=400 * 86_400).contains(l.get_ref()) => {
            issues.push(
                l.span(),
                "tokens.refresh_token_lifetime_secs",
                format!("{} is outside 300..=34560000 seconds", l.get_ref()),
            );
            0
        }
        Some(l) => *l.get_ref(),
        None => DEFAULT_REFRESH_LIFETIME,
    };
    let request_uri = match &raw.authorization.request_uri_lifetime_secs {
        Some(l) if !(1..=600).contains(l.get_ref()) => {
            issues.push(
                l.span(),
                "authorization.request_uri_lifetime_secs",
                format!("{} is outside 1..=600 seconds (FAPI 2.0)", l.get_ref()),
            );
            0
        }
        Some(l) => *l.get_ref(),
        None => crate::oauth::authorize::REQUEST_URI_LIFETIME,
    };
    let rotation_overlap = match &raw.tokens.rotation_overlap_secs {
        Some(l) if !(0..=30 * 86_400).contains(l.get_ref()) => {
            issues.push(
                l.span(),
                "tokens.rotation_overlap_secs",
                format!(
                    "{} is outside 0..=2592000 seconds (0: a certificate's tokens end with it)",
                    l.get_ref()
                ),
            );
            0
        }
        Some(l) => *l.get_ref(),
        None => 0,
    };
    Lifetimes {
        access_token: *lifetime.get_ref(),
        refresh_token,
        request_uri,
        rotation_overlap,
    }
}

/// `[rate_limits]`: the default per-client limit and the per-client ones; 0 is a mistake.
fn rate_limits(issues: &mut Issues, raw: &RawPolicy) -> (Option<u32>, HashMap<String, u32>) {
    let mut limit_ok = |v: &Spanned<u32>, field: &str| {
        if *v.get_ref() == 0 {
            issues.push(
                v.span(),
                field,
                "0 would refuse everything; leave the limit out for none".into(),
            );
            false
        } else {
            true
        }
    };
    let rate_limit = raw
        .rate_limits
        .per_client_per_minute
        .as_ref()
        .filter(|v| limit_ok(v, "rate_limits.per_client_per_minute"))
        .map(|v| *v.get_ref());
    let client_rate_limits = raw
        .rate_limits
        .clients
        .iter()
        .filter(|(id, v)| limit_ok(v, &format!("rate_limits.clients.{id}")))
        .map(|(id, v)| (id.clone(), *v.get_ref()))
        .collect();
    (rate_limit, client_rate_limits)
}

/// `[upstreams.*]`: https (http only to loopback) and a sane timeout.
fn upstreams(issues: &mut Issues, raw: &RawPolicy) -> HashMap<String, Upstream> {
    let mut upstreams = HashMap::new();
    for (name, up) in &raw.upstreams {
        let field = format!("upstreams.{name}");
        let u = up.get_ref();
        let url = u.url.get_ref().trim_end_matches('/');
        // Customer and consent ids travel to the upstream: in clear only over loopback (a
        // sidecar on the same host).
        let acceptable = reqwest::Url::parse(url).is_ok_and(|u| match u.scheme() {
            "https" => u.host().is_some(),
            "http" => matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")),
            _ => false,
        });
        if !acceptable {
            issues.push(
                u.url.span(),
                &format!("{field}.url"),
                format!("{url:?} must be an https:// URL (http:// only to loopback)"),
            );
            continue;
        }
        let timeout = u.timeout_secs.as_ref().map_or(10, |t| *t.get_ref());
        if !(1..=120).contains(&timeout) {
            issues.push(
                up.span(),
                &format!("{field}.timeout_secs"),
                format!("{timeout} is outside 1..=120 seconds"),
            );
            continue;
        }
        upstreams.insert(
            name.clone(),
            Upstream {
                name: name.clone(),
                url: url.to_string(),
                timeout_secs: timeout,
            },
        );
    }
    upstreams
}

/// `[roles.*]`: known roles and the scopes each may hold.
fn roles(issues: &mut Issues, raw: &RawPolicy) -> HashMap<Role, ScopeSet> {
    let mut role_scopes = HashMap::new();
    for (name, role) in &raw.roles {
        let field = format!("roles.{name}");
        let Ok(parsed) = Role::from_str(name) else {
            issues.push(
                role.span(),
                &field,
                format!("unknown role {name:?} (expected AISP, PISP or CBPII)"),
            );
            continue;
        };
        let mut scopes = Vec::new();
        for s in &role.get_ref().scopes {
            match Scope::from_str(s.get_ref()) {
                Ok(scope) => scopes.push(scope),
                Err(e) => issues.push(s.span(), &format!("{field}.scopes"), e),
            }
        }
        role_scopes.insert(parsed, scopes.into_iter().collect::<ScopeSet>());
    }
    role_scopes
}

type Rules = HashMap<String, Vec<(String, Rule)>>;

/// `[[routes]]`: one rule per protected route and method, each checked against the roles, the
/// consent the route acts through, and the upstreams; and every protected route covered.
fn routes(
    issues: &mut Issues,
    raw: &RawPolicy,
    known_routes: &[(&str, &str)],
    role_scopes: &HashMap<Role, ScopeSet>,
    upstreams: &HashMap<String, Upstream>,
) -> Rules {
    let mut rules: Rules = HashMap::new();
    // Routes that have a rule, valid or not: a broken rule is reported once, as itself.
    let mut mentioned: Vec<(String, String)> = Vec::new();
    for (i, spanned) in raw.routes.iter().enumerate() {
        let Some((method, route, rule)) = route_rule(
            issues,
            i,
            spanned,
            known_routes,
            role_scopes,
            upstreams,
            &mut mentioned,
        ) else {
            continue;
        };
        let entry = rules.entry(route.clone()).or_default();
        if entry.iter().any(|(m, _)| *m == method) {
            issues.push(
                spanned.span(),
                &format!("routes[{i}]"),
                format!("a second rule for {method} {route}"),
            );
            continue;
        }
        entry.push((method, rule));
    }
    for (method, route) in known_routes {
        let covered = mentioned.iter().any(|(m, r)| m == method && r == route);
        if !covered {
            issues.push(
                0..0,
                "routes",
                format!("no rule for {method} {route}; it would be refused to everyone"),
            );
        }
    }
    rules
}

/// The i-th `[[routes]]` rule, or `None` after reporting why it is not one.
fn route_rule(
    issues: &mut Issues,
    i: usize,
    spanned: &Spanned<RawRoute>,
    known_routes: &[(&str, &str)],
    role_scopes: &HashMap<Role, ScopeSet>,
    upstreams: &HashMap<String, Upstream>,
    mentioned: &mut Vec<(String, String)>,
) -> Option<(String, String, Rule)> {
    let r = spanned.get_ref();
    let field = |name: &str| format!("routes[{i}].{name}");
    let method = r.method.get_ref().to_ascii_uppercase();
    if !METHODS.contains(&method.as_str()) {
        issues.push(
            r.method.span(),
            &field("method"),
            format!("unknown HTTP method {:?}", r.method.get_ref()),
        );
        return None;
    }
    let route = r.route.get_ref();
    if !known_routes.contains(&(method.as_str(), route.as_str())) {
        issues.push(
            r.route.span(),
            &field("route"),
            format!("the gateway serves no protected route {method} {route}"),
        );
        return None;
    }
    mentioned.push((method.clone(), route.clone()));
    let role = match Role::from_str(r.role.get_ref()) {
        Ok(role) if role_scopes.contains_key(&role) => role,
        Ok(role) => {
            issues.push(
                r.role.span(),
                &field("role"),
                format!("role {role} is not defined under [roles]"),
            );
            return None;
        }
        Err(e) => {
            issues.push(r.role.span(), &field("role"), e);
            return None;
        }
    };
    let scope = match Scope::from_str(r.scope.get_ref()) {
        Ok(s) => s,
        Err(e) => {
            issues.push(r.scope.span(), &field("scope"), e);
            return None;
        }
    };
    if !role_scopes.get(&role).is_some_and(|s| s.contains(scope)) {
        issues.push(
            r.scope.span(),
            &field("scope"),
            format!("role {role} may not hold scope {scope}; add it under [roles.{role}]"),
        );
        return None;
    }
    let consent = consent_rule(issues, &field, spanned, &method, route)?;
    let upstream = match &r.upstream {
        None => None,
        Some(name) => match upstreams.get(name.get_ref()) {
            Some(u) => Some(u.clone()),
            None => {
                issues.push(
                    name.span(),
                    &field("upstream"),
                    format!("no [upstreams.{}] is defined", name.get_ref()),
                );
                return None;
            }
        },
    };
    Some((
        method,
        route.clone(),
        Rule {
            role,
            scope,
            consent,
            upstream,
        },
    ))
}

/// A rule's `consent` and `permissions`, held to what the route acts through (fixed in code:
/// the policy may narrow the permissions, never drop or widen them). `None` after reporting a
/// mistake; `Some(None)` for a route that needs no consent.
fn consent_rule(
    issues: &mut Issues,
    field: &dyn Fn(&str) -> String,
    spanned: &Spanned<RawRoute>,
    method: &str,
    route: &str,
) -> Option<Option<ConsentRule>> {
    let r = spanned.get_ref();
    let mut consent = match &r.consent {
        None => None,
        Some(kind) => match kind.get_ref().parse::<Kind>() {
            Ok(k) => Some(ConsentRule {
                kind: k,
                any_of: Vec::new(),
            }),
            Err(message) => {
                issues.push(kind.span(), &field("consent"), message);
                return None;
            }
        },
    };
    if let Some(perms) = &r.permissions {
        let Some(rule) = consent.as_mut() else {
            issues.push(
                spanned.span(),
                &field("permissions"),
                "permissions need a consent kind: add consent = \"account-access\"".into(),
            );
            return None;
        };
        let mut bad = false;
        for p in perms {
            match Permission::from_str(p.get_ref()) {
                Ok(p) => rule.any_of.push(p),
                Err(e) => {
                    issues.push(p.span(), &field("permissions"), e);
                    bad = true;
                }
            }
        }
        if bad {
            return None;
        }
    }
    if let Some(req) = CONSENT_REQUIREMENTS
        .iter()
        .find(|c| c.method == method && c.route == route)
    {
        match &consent {
            Some(rule) if rule.kind == req.kind => {
                if !req.permissions.is_empty()
                    && (rule.any_of.is_empty()
                        || rule.any_of.iter().any(|p| !req.permissions.contains(p)))
                {
                    issues.push(
                        spanned.span(),
                        &field("permissions"),
                        format!(
                            "{method} {route} must list permissions from {:?} (one of them \
                             must be granted to read it)",
                            req.permissions
                        ),
                    );
                    return None;
                }
            }
            _ => {
                issues.push(
                    spanned.span(),
                    &field("consent"),
                    format!(
                        "{method} {route} acts through a customer's consent: it needs consent \
                         = \"{}\"",
                        req.kind
                    ),
                );
                return None;
            }
        }
    }
    Some(consent)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// The dotted name of the key whose value starts on the line of `offset` — `section.key`, or
/// `routes[i].key` inside the i-th `[[routes]]` table — if that line assigns one.
fn field_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let (key, _) = text.get(line_start..offset)?.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.contains(['[', ']', '#', ' ']) {
        return None;
    }
    let mut table: Option<String> = None;
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for line in text.get(..line_start)?.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim();
            let n = counts.entry(name).or_insert(0);
            table = Some(format!("{name}[{n}]"));
            *n += 1;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = Some(name.trim().to_string());
        }
    }
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}
