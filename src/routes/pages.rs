//! The customer's pages on the public listener: sign-in, consent, connected apps, errors.
//! Server-rendered HTML that works without JavaScript; every interpolated value is escaped;
//! every form carries the session's CSRF token; every control has a label.

use std::fmt::Write;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header;

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;\
padding:0 1rem;line-height:1.5;color:#1a1a1a}h1{font-size:1.5rem}\
fieldset{border:1px solid #888;padding:1rem;margin:1rem 0}legend{font-weight:600}\
label{display:block;margin:.5rem 0 .25rem}input[type=text],input[type=password]{width:100%;\
padding:.5rem;font-size:1rem;box-sizing:border-box}button{font-size:1rem;padding:.5rem 1.25rem;\
margin:.5rem .5rem .5rem 0}button:focus,input:focus{outline:3px solid #1d70b8;outline-offset:2px}\
.error{color:#b10e1e;font-weight:600}.muted{color:#555}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #ccc}";

/// A full page with the headers every customer page carries.
pub fn page(status: StatusCode, title: &str, body: &str) -> HttpResponse {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} – Sandbox Bank</title><style>{STYLE}</style></head>\
         <body><header><p class=\"muted\">Sandbox Bank · secured by obgate</p></header>\
         <main>{body}</main></body></html>",
        esc(title)
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(html)
}

pub fn error(status: StatusCode, message: &str) -> HttpResponse {
    page(
        status,
        "Something went wrong",
        &format!(
            "<h1>We could not continue</h1><p class=\"error\" role=\"alert\">{}</p>\
             <p>Go back to the app you came from and start again.</p>",
            esc(message)
        ),
    )
}

fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// The sign-in form; `action` is where it posts.
pub fn login(action: &str, csrf: &str, tpp: Option<&str>, error: Option<&str>) -> String {
    let mut s = String::new();
    match tpp {
        Some(name) => {
            let _ = write!(
                s,
                "<h1>Sign in to share with {}</h1><p><strong>{}</strong> is asking for access \
                 through Open Banking. Sign in to Sandbox Bank to review the request.</p>",
                esc(name),
                esc(name)
            );
        }
        None => s.push_str("<h1>Sign in to manage connected apps</h1>"),
    }
    if let Some(e) = error {
        let _ = write!(
            s,
            "<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>",
            esc(e)
        );
    }
    let described = if error.is_some() {
        " aria-describedby=\"login-error\""
    } else {
        ""
    };
    let _ = write!(
        s,
        "<form method=\"post\" action=\"{}\">{}\
         <label for=\"username\">Username</label>\
         <input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" \
         required autofocus{described}>\
         <label for=\"password\">Password</label>\
         <input type=\"password\" id=\"password\" name=\"password\" \
         autocomplete=\"current-password\" required{described}>\
         <button type=\"submit\">Sign in</button></form>",
        esc(action),
        csrf_field(csrf)
    );
    s
}

/// One account the customer may pick.
pub struct AccountChoice {
    pub id: String,
    pub label: String,
    pub checked: bool,
}

/// What the consent page shows.
pub struct ConsentView<'a> {
    pub tpp: &'a str,
    pub customer: &'a str,
    pub csrf: &'a str,
    pub heading: String,
    /// Lines listing what is shared or what will be paid.
    pub items: Vec<String>,
    pub expiry: Option<String>,
    pub accounts: Vec<AccountChoice>,
    /// AIS: several accounts (checkboxes); PIS/CBPII: one (radio buttons).
    pub many: bool,
    pub account_legend: &'a str,
    pub error: Option<String>,
}

pub fn consent(v: &ConsentView<'_>) -> String {
    let mut s = format!(
        "<h1>{}</h1><p>Signed in as {}. <strong>{}</strong> is asking for:</p><ul>",
        esc(&v.heading),
        esc(v.customer),
        esc(v.tpp)
    );
    for item in &v.items {
        let _ = write!(s, "<li>{}</li>", esc(item));
    }
    s.push_str("</ul>");
    if let Some(e) = &v.expiry {
        let _ = write!(s, "<p>This access ends on <strong>{}</strong>.</p>", esc(e));
    }
    if let Some(e) = &v.error {
        let _ = write!(s, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    let _ = write!(
        s,
        "<form method=\"post\" action=\"/authorize/decision\">{}<fieldset><legend>{}</legend>",
        csrf_field(v.csrf),
        esc(v.account_legend)
    );
    let kind = if v.many { "checkbox" } else { "radio" };
    for (i, a) in v.accounts.iter().enumerate() {
        let _ = write!(
            s,
            "<div><input type=\"{kind}\" id=\"account-{i}\" name=\"account\" value=\"{}\"{}>\
             <label for=\"account-{i}\" style=\"display:inline\">{}</label></div>",
            esc(&a.id),
            if a.checked { " checked" } else { "" },
            esc(&a.label)
        );
    }
    s.push_str(
        "</fieldset><button type=\"submit\" name=\"decision\" value=\"approve\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>\
         <p class=\"muted\">You can withdraw access at any time under Connected apps.</p>",
    );
    s
}

/// One app the customer has connected.
pub struct ConnectedApp {
    pub consent_id: String,
    pub tpp: String,
    pub what: String,
    pub since: String,
    pub status: String,
    pub revocable: bool,
}

pub fn connected_apps(customer: &str, csrf: &str, apps: &[ConnectedApp]) -> String {
    let mut s = format!(
        "<h1>Connected apps</h1><p>Signed in as {}.</p>",
        esc(customer)
    );
    if apps.is_empty() {
        s.push_str("<p>No apps have access to your accounts.</p>");
    } else {
        s.push_str(
            "<table><caption class=\"muted\">Apps you have given access</caption><thead><tr>\
             <th scope=\"col\">App</th><th scope=\"col\">Access</th><th scope=\"col\">Since</th>\
             <th scope=\"col\">Status</th><th scope=\"col\"><span class=\"muted\">Action</span>\
             </th></tr></thead><tbody>",
        );
        for a in apps {
            let action = if a.revocable {
                format!(
                    "<form method=\"post\" action=\"/connected-apps/revoke\">{}\
                     <input type=\"hidden\" name=\"consent_id\" value=\"{}\">\
                     <button type=\"submit\" aria-label=\"Remove access for {}\">Remove access\
                     </button></form>",
                    csrf_field(csrf),
                    esc(&a.consent_id),
                    esc(&a.tpp)
                )
            } else {
                String::new()
            };
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
                esc(&a.tpp),
                esc(&a.what),
                esc(&a.since),
                esc(&a.status)
            );
        }
        s.push_str("</tbody></table>");
    }
    let _ = write!(
        s,
        "<form method=\"post\" action=\"/connected-apps/logout\">{}\
         <button type=\"submit\">Sign out</button></form>",
        csrf_field(csrf)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_interpolated_is_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        let html = login(
            "/authorize/login",
            "c\"srf",
            Some("<b>Evil</b>"),
            Some("did not match"),
        );
        assert!(!html.contains("<b>Evil</b>"));
        assert!(html.contains("&lt;b&gt;Evil&lt;/b&gt;"));
        assert!(html.contains("value=\"c&quot;srf\""));
        assert!(html.contains("<label for=\"password\">"));
    }
}
