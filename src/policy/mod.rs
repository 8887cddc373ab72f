//! Access policy, loaded from `policies/access.toml`: which scopes each role may hold, which
//! role and scope each protected route needs, and token lifetimes. `decide` returns a typed
//! [`Permit`] or a typed [`Denied`]. A route without a rule is denied (fail closed), and
//! `obgate policy check` reports it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::consent::Kind;
use crate::oauth::grants::GrantSettings;
use crate::oauth::{Scope, ScopeSet};
use crate::registry::Role;
use crate::resources::consents::Permission;

mod parse;

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
    grants: GrantSettings,
    require_signed_request_object: bool,
    request_uri_lifetime: i64,
    expiry_warning_days: i64,
    rate_limit: Option<u32>,
    client_rate_limits: HashMap<String, u32>,
    role_scopes: HashMap<Role, ScopeSet>,
    /// route template → [(method, rule)]
    rules: HashMap<String, Vec<(String, Rule)>>,
}

impl Policy {
    /// Loads `dir/access.toml`, checking it against the routes the gateway serves.
    pub fn load(
        dir: &Path,
        known_routes: &[(impl AsRef<str>, impl AsRef<str>)],
    ) -> Result<Self, PolicyError> {
        let path = dir.join(POLICY_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&path, &text, known_routes)
    }

    /// Parses and checks a policy file's text; every mistake is reported, each with its
    /// file, line, column and field.
    pub fn parse(
        path: &Path,
        text: &str,
        known_routes: &[(impl AsRef<str>, impl AsRef<str>)],
    ) -> Result<Self, PolicyError> {
        let known: Vec<(&str, &str)> = known_routes
            .iter()
            .map(|(method, route)| (method.as_ref(), route.as_ref()))
            .collect();
        parse::parse(path, text, &known)
    }

    /// Token lifetimes and refresh rotation for the grants.
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

    /// A client certificate this many days or fewer from expiry is `expiring_soon`.
    pub fn expiry_warning_days(&self) -> i64 {
        self.expiry_warning_days
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
        assert_eq!(
            fields(&format!(
                "{GOOD}\n[certificates]\nexpiry_warning_days = 0\n"
            )),
            ["certificates.expiry_warning_days"]
        );
        assert_eq!(
            fields(&GOOD.replace(
                "access_token_lifetime_secs = 300",
                "access_token_lifetime_secs = 300\nrotation_overlap_secs = -1"
            )),
            ["tokens.rotation_overlap_secs"]
        );
    }

    #[test]
    fn the_shipped_policy_cannot_drop_or_widen_a_routes_consent() {
        const SHIPPED: &str = include_str!("../../policies/access.toml");
        let routes = crate::ops::openapi::protected_routes();
        let check = |text: &str| Policy::parse(Path::new("access.toml"), text, &routes);
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
