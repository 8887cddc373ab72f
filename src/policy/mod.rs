//! Access policy, loaded from `policies/access.toml`: which scopes each role may hold, which
//! role and scope each protected route needs, and token lifetimes. `decide` returns a typed
//! [`Permit`] or a typed [`Denied`]. A route without a rule is denied (fail closed), and
//! `obgate policy check` reports it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use toml::Spanned;

use crate::consent::Kind;
use crate::oauth::grants::GrantSettings;
use crate::oauth::{Scope, ScopeSet};
use crate::registry::Role;
use crate::resources::CONSENT_REQUIREMENTS;
use crate::resources::consents::Permission;

pub const POLICY_FILE: &str = "access.toml";
/// Refresh tokens live 90 days unless the policy or the consent's expiry says less.
const DEFAULT_REFRESH_LIFETIME: i64 = 90 * 86_400;
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// One mistake in a policy file, located by line, column and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyIssue {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for PolicyIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.field,
            self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<PolicyIssue>),
}

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
    routes: Vec<Spanned<RawRoute>>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    /// Base URL; the request's path and query are appended.
    pub url: String,
    pub timeout_secs: u64,
}

/// What a route needs of the consent behind the token: its kind, and (when listed) at least
/// one of these permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRule {
    pub kind: Kind,
    pub any_of: Vec<Permission>,
}

#[derive(Clone, Debug)]
struct Rule {
    role: Role,
    scope: Scope,
    consent: Option<ConsentRule>,
    upstream: Option<Upstream>,
}

/// Proof that the policy allows this request. Only [`Policy::decide`] builds one.
#[derive(Debug, Clone)]
pub struct Permit {
    role: Role,
    scope: Scope,
    consent: Option<ConsentRule>,
    upstream: Option<Upstream>,
}

impl Permit {
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn scope(&self) -> Scope {
        self.scope
    }
    /// The consent this route needs behind the token, if any.
    pub fn consent(&self) -> Option<&ConsentRule> {
        self.consent.as_ref()
    }
    /// Where to send the request instead of the sandbox bank, if configured.
    pub fn upstream(&self) -> Option<&Upstream> {
        self.upstream.as_ref()
    }
}

/// Why the policy refuses a request. `Display` is the message the caller sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("no access rule covers {method} {route}")]
    NoRule { method: String, route: String },
    #[error("this route needs the {0} role, which the client is not registered for")]
    RoleMissing(Role),
    #[error("this route needs the {0} scope, which the access token does not carry")]
    ScopeMissing(Scope),
}

impl Denied {
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::NoRule { .. } => "policy_no_rule",
            Denied::RoleMissing(_) => "policy_role_missing",
            Denied::ScopeMissing(_) => "policy_scope_missing",
        }
    }
}

#[derive(Debug)]
pub struct Policy {
    access_token_lifetime: i64,
    grants: GrantSettings,
    require_signed_request_object: bool,
    request_uri_lifetime: i64,
    rate_limit: Option<u32>,
    client_rate_limits: HashMap<String, u32>,
    role_scopes: HashMap<Role, ScopeSet>,
    /// route template → [(method, rule)]
    rules: HashMap<String, Vec<(String, Rule)>>,
}

impl Policy {
    /// Loads `dir/access.toml`, checking it against the routes the gateway serves.
    pub fn load(dir: &Path, known_routes: &[(&str, &str)]) -> Result<Self, PolicyError> {
        let path = dir.join(POLICY_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&path, &text, known_routes)
    }

    pub fn parse(
        path: &Path,
        text: &str,
        known_routes: &[(&str, &str)],
    ) -> Result<Self, PolicyError> {
        let at = |span: std::ops::Range<usize>, field: &str, message: String| {
            let (line, column) = line_col(text, span.start);
            PolicyIssue {
                file: path.to_path_buf(),
                line,
                column,
                field: field.to_string(),
                message,
            }
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            // The span of a misspelt or mistyped key points at the key itself.
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
            PolicyError::Invalid(vec![at(span, &field, e.message().to_string())])
        })?;
        let mut issues = Vec::new();

        let lifetime = raw.tokens.access_token_lifetime_secs;
        if !(30..=3600).contains(lifetime.get_ref()) {
            issues.push(at(
                lifetime.span(),
                "tokens.access_token_lifetime_secs",
                format!("{} is outside 30..=3600 seconds", lifetime.get_ref()),
            ));
        }

        let refresh_lifetime = match &raw.tokens.refresh_token_lifetime_secs {
            Some(l) if !(300..=400 * 86_400).contains(l.get_ref()) => {
                issues.push(at(
                    l.span(),
                    "tokens.refresh_token_lifetime_secs",
                    format!("{} is outside 300..=34560000 seconds", l.get_ref()),
                ));
                0
            }
            Some(l) => *l.get_ref(),
            None => DEFAULT_REFRESH_LIFETIME,
        };

        let request_uri_lifetime = match &raw.authorization.request_uri_lifetime_secs {
            Some(l) if !(1..=600).contains(l.get_ref()) => {
                issues.push(at(
                    l.span(),
                    "authorization.request_uri_lifetime_secs",
                    format!("{} is outside 1..=600 seconds (FAPI 2.0)", l.get_ref()),
                ));
                0
            }
            Some(l) => *l.get_ref(),
            None => crate::oauth::authorize::REQUEST_URI_LIFETIME,
        };

        let mut limit_ok = |v: &Spanned<u32>, field: &str| {
            if *v.get_ref() == 0 {
                issues.push(at(
                    v.span(),
                    field,
                    "0 would refuse everything; leave the limit out for none".into(),
                ));
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
        let client_rate_limits: HashMap<String, u32> = raw
            .rate_limits
            .clients
            .iter()
            .filter(|(id, v)| limit_ok(v, &format!("rate_limits.clients.{id}")))
            .map(|(id, v)| (id.clone(), *v.get_ref()))
            .collect();

        let mut upstreams = HashMap::new();
        for (name, up) in &raw.upstreams {
            let field = format!("upstreams.{name}");
            let u = up.get_ref();
            let url = u.url.get_ref().trim_end_matches('/');
            // Customer and consent ids travel to the upstream: in clear only over loopback
            // (a sidecar on the same host).
            let acceptable = reqwest::Url::parse(url).is_ok_and(|u| match u.scheme() {
                "https" => u.host().is_some(),
                "http" => matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")),
                _ => false,
            });
            if !acceptable {
                issues.push(at(
                    u.url.span(),
                    &format!("{field}.url"),
                    format!("{url:?} must be an https:// URL (http:// only to loopback)"),
                ));
                continue;
            }
            let timeout = u.timeout_secs.as_ref().map_or(10, |t| *t.get_ref());
            if !(1..=120).contains(&timeout) {
                issues.push(at(
                    up.span(),
                    &format!("{field}.timeout_secs"),
                    format!("{timeout} is outside 1..=120 seconds"),
                ));
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

        let mut role_scopes = HashMap::new();
        for (name, role) in &raw.roles {
            let field = format!("roles.{name}");
            let Ok(parsed) = Role::from_str(name) else {
                issues.push(at(
                    role.span(),
                    &field,
                    format!("unknown role {name:?} (expected AISP, PISP or CBPII)"),
                ));
                continue;
            };
            let mut scopes = Vec::new();
            for s in &role.get_ref().scopes {
                match Scope::from_str(s.get_ref()) {
                    Ok(scope) => scopes.push(scope),
                    Err(e) => issues.push(at(s.span(), &format!("{field}.scopes"), e)),
                }
            }
            role_scopes.insert(parsed, scopes.into_iter().collect::<ScopeSet>());
        }

        let mut rules: HashMap<String, Vec<(String, Rule)>> = HashMap::new();
        // Routes that have a rule, valid or not: a broken rule is reported once, as itself.
        let mut mentioned: Vec<(String, String)> = Vec::new();
        for (i, spanned) in raw.routes.iter().enumerate() {
            let r = spanned.get_ref();
            let field = |name: &str| format!("routes[{i}].{name}");
            let method = r.method.get_ref().to_ascii_uppercase();
            if !METHODS.contains(&method.as_str()) {
                issues.push(at(
                    r.method.span(),
                    &field("method"),
                    format!("unknown HTTP method {:?}", r.method.get_ref()),
                ));
                continue;
            }
            let route = r.route.get_ref();
            if !known_routes.contains(&(method.as_str(), route.as_str())) {
                issues.push(at(
                    r.route.span(),
                    &field("route"),
                    format!("the gateway serves no protected route {method} {route}"),
                ));
                continue;
            }
            mentioned.push((method.clone(), route.clone()));
            let role = match Role::from_str(r.role.get_ref()) {
                Ok(role) if role_scopes.contains_key(&role) => role,
                Ok(role) => {
                    issues.push(at(
                        r.role.span(),
                        &field("role"),
                        format!("role {role} is not defined under [roles]"),
                    ));
                    continue;
                }
                Err(e) => {
                    issues.push(at(r.role.span(), &field("role"), e));
                    continue;
                }
            };
            let scope = match Scope::from_str(r.scope.get_ref()) {
                Ok(s) => s,
                Err(e) => {
                    issues.push(at(r.scope.span(), &field("scope"), e));
                    continue;
                }
            };
            if !role_scopes.get(&role).is_some_and(|s| s.contains(scope)) {
                issues.push(at(
                    r.scope.span(),
                    &field("scope"),
                    format!("role {role} may not hold scope {scope}; add it under [roles.{role}]"),
                ));
                continue;
            }
            let consent = match &r.consent {
                None => None,
                Some(kind) => match kind.get_ref().parse::<Kind>() {
                    Ok(k) => Some(ConsentRule {
                        kind: k,
                        any_of: Vec::new(),
                    }),
                    Err(message) => {
                        issues.push(at(kind.span(), &field("consent"), message));
                        continue;
                    }
                },
            };
            let mut consent = consent;
            if let Some(perms) = &r.permissions {
                let Some(rule) = consent.as_mut() else {
                    issues.push(at(
                        spanned.span(),
                        &field("permissions"),
                        "permissions need a consent kind: add consent = \"account-access\"".into(),
                    ));
                    continue;
                };
                let mut bad = false;
                for p in perms {
                    match Permission::from_str(p.get_ref()) {
                        Ok(p) => rule.any_of.push(p),
                        Err(e) => {
                            issues.push(at(p.span(), &field("permissions"), e));
                            bad = true;
                        }
                    }
                }
                if bad {
                    continue;
                }
            }
            if let Some(req) = CONSENT_REQUIREMENTS
                .iter()
                .find(|c| c.method == method && c.route == route.as_str())
            {
                let here = at(spanned.span(), &field("consent"), String::new());
                match &consent {
                    Some(rule) if rule.kind == req.kind => {
                        if !req.permissions.is_empty()
                            && (rule.any_of.is_empty()
                                || rule.any_of.iter().any(|p| !req.permissions.contains(p)))
                        {
                            issues.push(PolicyIssue {
                                field: field("permissions"),
                                message: format!(
                                    "{method} {route} must list permissions from {:?} (one of \
                                     them must be granted to read it)",
                                    req.permissions
                                ),
                                ..here
                            });
                            continue;
                        }
                    }
                    _ => {
                        issues.push(PolicyIssue {
                            message: format!(
                                "{method} {route} acts through a customer's consent: it needs \
                                 consent = \"{}\"",
                                req.kind
                            ),
                            ..here
                        });
                        continue;
                    }
                }
            }
            let upstream = match &r.upstream {
                None => None,
                Some(name) => match upstreams.get(name.get_ref()) {
                    Some(u) => Some(u.clone()),
                    None => {
                        issues.push(at(
                            name.span(),
                            &field("upstream"),
                            format!("no [upstreams.{}] is defined", name.get_ref()),
                        ));
                        continue;
                    }
                },
            };
            let entry = rules.entry(route.clone()).or_default();
            if entry.iter().any(|(m, _)| *m == method) {
                issues.push(at(
                    spanned.span(),
                    &format!("routes[{i}]"),
                    format!("a second rule for {method} {route}"),
                ));
                continue;
            }
            entry.push((
                method,
                Rule {
                    role,
                    scope,
                    consent,
                    upstream,
                },
            ));
        }

        for (method, route) in known_routes {
            let covered = mentioned.iter().any(|(m, r)| m == method && r == route);
            if !covered {
                issues.push(at(
                    0..0,
                    "routes",
                    format!("no rule for {method} {route}; it would be refused to everyone"),
                ));
            }
        }

        if !issues.is_empty() {
            return Err(PolicyError::Invalid(issues));
        }
        Ok(Self {
            access_token_lifetime: *lifetime.get_ref(),
            grants: GrantSettings {
                access_token_lifetime: *lifetime.get_ref(),
                refresh_token_lifetime: refresh_lifetime,
                rotate_refresh_tokens: raw.tokens.refresh_token_rotation,
            },
            require_signed_request_object: raw.authorization.require_signed_request_object,
            request_uri_lifetime,
            rate_limit,
            client_rate_limits,
            role_scopes,
            rules,
        })
    }

    /// Access-token lifetime in seconds.
    pub fn access_token_lifetime(&self) -> i64 {
        self.access_token_lifetime
    }

    /// Lifetimes and rotation for the customer grants.
    pub fn grant_settings(&self) -> GrantSettings {
        self.grants
    }

    /// Whether `/par` accepts only signed request objects (JAR).
    pub fn require_signed_request_object(&self) -> bool {
        self.require_signed_request_object
    }

    /// Requests per minute this client may make, if limited.
    pub fn rate_limit(&self, client_id: &str) -> Option<u32> {
        self.client_rate_limits
            .get(client_id)
            .copied()
            .or(self.rate_limit)
    }

    /// How long a pushed request's `request_uri` may be used.
    pub fn request_uri_lifetime(&self) -> i64 {
        self.request_uri_lifetime
    }

    /// Every scope the client's roles may hold.
    pub fn scopes_for(&self, roles: &[Role]) -> ScopeSet {
        roles
            .iter()
            .filter_map(|r| self.role_scopes.get(r))
            .flat_map(ScopeSet::iter)
            .collect()
    }

    pub fn decide(
        &self,
        roles: &[Role],
        token_scopes: &ScopeSet,
        method: &str,
        route: &str,
    ) -> Result<Permit, Denied> {
        let rule = self
            .rules
            .get(route)
            .and_then(|v| v.iter().find(|(m, _)| m == method))
            .map(|(_, r)| r)
            .ok_or_else(|| Denied::NoRule {
                method: method.to_string(),
                route: route.to_string(),
            })?;
        if !roles.contains(&rule.role) {
            return Err(Denied::RoleMissing(rule.role));
        }
        if !token_scopes.contains(rule.scope) {
            return Err(Denied::ScopeMissing(rule.scope));
        }
        Ok(Permit {
            role: rule.role,
            scope: rule.scope,
            consent: rule.consent.clone(),
            upstream: rule.upstream.clone(),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &[(&str, &str)] = &[("POST", "/a"), ("GET", "/a/{Id}")];

    const GOOD: &str = r#"
[tokens]
access_token_lifetime_secs = 300

[roles.AISP]
scopes = ["accounts"]
[roles.PISP]
scopes = ["payments"]

[[routes]]
method = "POST"
route = "/a"
role = "AISP"
scope = "accounts"

[[routes]]
method = "GET"
route = "/a/{Id}"
role = "AISP"
scope = "accounts"
"#;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("access.toml"), text, ROUTES)
    }

    fn issues(text: &str) -> Vec<PolicyIssue> {
        match parse(text) {
            Err(PolicyError::Invalid(i)) => i,
            other => vec![PolicyIssue {
                file: PathBuf::new(),
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("expected issues, got {other:?}"),
            }],
        }
    }

    #[test]
    fn decide_permits_the_right_role_and_scope_only() -> Result<(), PolicyError> {
        let p = parse(GOOD)?;
        let accounts = ScopeSet::parse("accounts").unwrap_or_default();
        assert!(p.decide(&[Role::Aisp], &accounts, "POST", "/a").is_ok());
        assert_eq!(
            p.decide(&[Role::Pisp], &accounts, "POST", "/a").err(),
            Some(Denied::RoleMissing(Role::Aisp))
        );
        assert_eq!(
            p.decide(&[Role::Aisp], &ScopeSet::default(), "POST", "/a")
                .err(),
            Some(Denied::ScopeMissing(Scope::Accounts))
        );
        assert!(matches!(
            p.decide(&[Role::Aisp], &accounts, "DELETE", "/a"),
            Err(Denied::NoRule { .. })
        ));
        Ok(())
    }

    #[test]
    fn a_scope_the_role_may_not_hold_is_reported_with_line_and_field() {
        let bad = GOOD.replacen("scope = \"accounts\"", "scope = \"payments\"", 1);
        let found = issues(&bad);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "routes[0].scope");
        assert_eq!(found[0].line, 14);
        assert!(found[0].to_string().starts_with("access.toml:14:"));
    }

    #[test]
    fn a_wrongly_typed_value_is_reported_with_its_field() {
        let bad = GOOD.replacen(
            "access_token_lifetime_secs = 300",
            "access_token_lifetime_secs = \"300\"",
            1,
        );
        let found = issues(&bad);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].field, "tokens.access_token_lifetime_secs",
            "{found:?}"
        );
        assert!(found[0].message.contains("invalid type"), "{found:?}");
        let bad = GOOD.replacen("method = \"GET\"", "method = 7", 1);
        let found = issues(&bad);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "routes[1].method", "{found:?}");
        let bad = GOOD.replacen("scopes = [\"payments\"]", "scopes = \"payments\"", 1);
        assert_eq!(issues(&bad)[0].field, "roles.PISP.scopes");
    }

    #[test]
    fn a_misspelt_key_is_reported_with_its_path() {
        let bad = GOOD.replacen("role = \"AISP\"", "rol = \"AISP\"", 1);
        let found = issues(&bad);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("rol"), "{found:?}");
        assert_eq!(found[0].line, 13);
        assert_eq!(found[0].field, "rol");
    }

    #[test]
    fn uncovered_and_unknown_routes_are_reported() {
        let bad = GOOD.replacen("route = \"/a/{Id}\"", "route = \"/b\"", 1);
        let found = issues(&bad);
        assert!(
            found.iter().any(|i| i.field == "routes[1].route"),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|i| i.field == "routes" && i.message.contains("/a/{Id}")),
            "{found:?}"
        );
    }

    #[test]
    fn lifetime_out_of_range_is_reported() {
        let found = issues(&GOOD.replace("= 300", "= 86400"));
        assert_eq!(found[0].field, "tokens.access_token_lifetime_secs");
        assert_eq!(found[0].line, 3);
    }

    #[test]
    fn consent_rules_and_upstreams_reach_the_permit() -> Result<(), PolicyError> {
        let text = format!("{GOOD}\n[upstreams.core]\nurl = \"https://core.example/api/\"\n")
            .replacen(
                "route = \"/a/{Id}\"\nrole = \"AISP\"\nscope = \"accounts\"",
                "route = \"/a/{Id}\"\nrole = \"AISP\"\nscope = \"accounts\"\n\
             consent = \"account-access\"\npermissions = [\"ReadBalances\"]\nupstream = \"core\"",
                1,
            );
        let p = parse(&text)?;
        let accounts = ScopeSet::parse("accounts").unwrap_or_default();
        let permit = p.decide(&[Role::Aisp], &accounts, "GET", "/a/{Id}");
        let permit = permit.map_err(|d| {
            PolicyError::Invalid(vec![PolicyIssue {
                file: PathBuf::new(),
                line: 0,
                column: 0,
                field: String::new(),
                message: d.to_string(),
            }])
        })?;
        assert_eq!(
            permit.consent(),
            Some(&ConsentRule {
                kind: Kind::AccountAccess,
                any_of: vec![Permission::ReadBalances]
            })
        );
        let up = permit.upstream().map(|u| (u.url.as_str(), u.timeout_secs));
        assert_eq!(up, Some(("https://core.example/api", 10)));
        let post = p.decide(&[Role::Aisp], &accounts, "POST", "/a");
        assert!(post.is_ok_and(|p| p.consent().is_none() && p.upstream().is_none()));
        assert!(!p.grant_settings().rotate_refresh_tokens);
        assert_eq!(p.request_uri_lifetime(), 90);
        Ok(())
    }

    #[test]
    fn bad_consent_permission_and_upstream_settings_are_reported() {
        let with = |extra: &str| {
            GOOD.replacen(
                "route = \"/a\"\nrole = \"AISP\"\nscope = \"accounts\"",
                &format!("route = \"/a\"\nrole = \"AISP\"\nscope = \"accounts\"\n{extra}"),
                1,
            )
        };
        let fields = |text: &str| {
            issues(text)
                .into_iter()
                .map(|i| i.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fields(&with("consent = \"mortgage\"")),
            ["routes[0].consent"]
        );
        assert_eq!(
            fields(&with("permissions = [\"ReadBalances\"]")),
            ["routes[0].permissions"]
        );
        assert_eq!(
            fields(&with(
                "consent = \"account-access\"\npermissions = [\"ReadMinds\"]"
            )),
            ["routes[0].permissions"]
        );
        assert_eq!(fields(&with("upstream = \"core\"")), ["routes[0].upstream"]);
        assert_eq!(
            fields(&format!("{GOOD}\n[upstreams.core]\nurl = \"ftp://core\"\n")),
            ["upstreams.core.url"]
        );
        assert_eq!(
            fields(&format!(
                "{GOOD}\n[upstreams.core]\nurl = \"http://core.bank.internal\"\n"
            )),
            ["upstreams.core.url"],
            "plain http only to loopback"
        );
        assert_eq!(
            fields(&GOOD.replace(
                "access_token_lifetime_secs = 300",
                "access_token_lifetime_secs = 300\nrefresh_token_lifetime_secs = 5"
            )),
            ["tokens.refresh_token_lifetime_secs"]
        );
        assert_eq!(
            fields(&format!(
                "{GOOD}\n[authorization]\nrequest_uri_lifetime_secs = 900\n"
            )),
            ["authorization.request_uri_lifetime_secs"]
        );
    }

    #[test]
    fn the_shipped_policy_cannot_drop_or_widen_a_routes_consent() {
        const SHIPPED: &str = include_str!("../../policies/access.toml");
        let routes = crate::routes::PROTECTED_ROUTES;
        let check = |text: &str| Policy::parse(Path::new("access.toml"), text, routes);
        assert!(check(SHIPPED).is_ok());
        let balances = "route = \"/open-banking/v3.1/aisp/accounts/{AccountId}/balances\"\n\
                        role = \"AISP\"\nscope = \"accounts\"\n";
        assert!(SHIPPED.contains(balances));
        let dropped = SHIPPED.replace(
            &format!("{balances}consent = \"account-access\"\npermissions = [\"ReadBalances\"]\n"),
            balances,
        );
        let widened = SHIPPED.replace(
            "permissions = [\"ReadBalances\"]",
            "permissions = [\"ReadBalances\", \"ReadAccountsBasic\"]",
        );
        let unlisted = SHIPPED.replace("permissions = [\"ReadBalances\"]\n", "");
        for (what, text) in [
            ("dropped", dropped),
            ("widened", widened),
            ("unlisted", unlisted),
        ] {
            assert_ne!(text, SHIPPED, "{what}: the edit did not apply");
            match check(&text) {
                Err(PolicyError::Invalid(issues)) => assert!(
                    issues.iter().any(|i| i.message.contains("balances")),
                    "{what}: {issues:?}"
                ),
                other => assert!(other.is_err(), "{what}: accepted"),
            }
        }
    }
}
