//! The onboarding portal's client lifecycle (SPEC §6): list and show, approve, suspend,
//! activate, delete; each refuses what its status does not allow, and a client that is not let
//! in has its calls and its tokens refused.

use obgate::pki::CertSpec;
use serde_json::Value;

use crate::flows::Tpp;
use crate::helpers::*;

fn portal(app: &TestApp) -> Res<reqwest::Client> {
    let cert = app.issue_trusted(
        "portal-op",
        CertSpec::operator("portal-op", &["portal".to_string()], now()),
    )?;
    app.client(&cert)
}

async fn act(app: &TestApp, portal: &reqwest::Client, step: &str) -> Res<u16> {
    let res = if step == "delete" {
        portal.delete(format!("{}/admin/clients/tpp-a", app.mtls))
    } else {
        portal.post(format!("{}/admin/clients/tpp-a/{step}", app.mtls))
    }
    .send()
    .await?;
    Ok(res.status().as_u16())
}

async fn token_request(app: &TestApp) -> Res<(u16, Value)> {
    let res = app
        .client(&app.tpp_a)?
        .post(format!("{}/token", app.mtls))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "tpp-a"),
            ("scope", "accounts"),
        ])
        .send()
        .await?;
    Ok((res.status().as_u16(), res.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_lists_shows_suspends_activates_and_deletes_a_client() -> TestResult {
    let app = spawn_app().await?;
    let portal = portal(&app)?;
    let page: Value = portal
        .get(format!("{}/admin/clients?q=ALPHA", app.mtls))
        .send()
        .await?
        .json()
        .await?;
    let clients = page["clients"].as_array().ok_or("no clients")?;
    assert_eq!(clients.len(), 1, "{page}");
    assert_eq!(clients[0]["client_id"], "tpp-a");
    assert_eq!(clients[0]["status"], "active");
    assert!(clients[0]["soonest_cert_expiry"].is_string(), "{page}");
    let bogus = portal
        .get(format!("{}/admin/clients?status=bogus", app.mtls))
        .send()
        .await?;
    assert_eq!(bogus.status(), 400);
    let detail: Value = portal
        .get(format!("{}/admin/clients/tpp-a", app.mtls))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        detail["certificates"][0]["thumbprint"],
        app.tpp_a.thumbprint()?
    );

    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let a = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let consent: Value = serde_json::from_str(AAC_BODY)?;
    let create = || a.post_json(&token, CONSENTS, None, &consent);
    assert_eq!(create().await?.0, 201);

    assert_eq!(act(&app, &portal, "suspend").await?, 200);
    assert_eq!(
        act(&app, &portal, "suspend").await?,
        409,
        "suspended already"
    );
    let (status, body) = create().await?;
    assert_eq!(status, 401, "{body}");
    let (status, body) = token_request(&app).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (401, "invalid_client".into())
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("suspended")
    );

    assert_eq!(act(&app, &portal, "activate").await?, 200);
    assert_eq!(create().await?.0, 201, "back in");

    assert_eq!(act(&app, &portal, "delete").await?, 204);
    let (status, body) = create().await?;
    assert_eq!(status, 401, "{body}");
    assert!(body.to_string().contains("deleted"), "{body}");
    let (status, body) = token_request(&app).await?;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        act(&app, &portal, "activate").await?,
        409,
        "deleted is final"
    );
    assert_eq!(act(&app, &portal, "delete").await?, 409);
    let shown: Value = portal
        .get(format!("{}/admin/clients/tpp-a", app.mtls))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(shown["status"], "deleted", "kept, for the audit log");
    let refused = app
        .await_audit(|e| e.reason.as_deref() == Some("client_deleted"))
        .await?;
    assert_eq!(refused.cert_thumbprint, Some(app.tpp_a.thumbprint()?));
    // An auditor's introspection says inactive.
    let auditor = app.issue_trusted(
        "audit-op",
        CertSpec::operator("audit-op", &["auditor".to_string()], now()),
    )?;
    let introspected: Value = app
        .client(&auditor)?
        .post(format!("{}/introspect", app.mtls))
        .form(&[("token", token.as_str())])
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(introspected["active"], false, "{introspected}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_client_is_refused_until_approved_once() -> TestResult {
    let app = spawn_app().await?;
    let portal = portal(&app)?;
    app.sql("UPDATE clients SET status = 'pending' WHERE client_id = 'tpp-a'")
        .await?;
    let (status, body) = token_request(&app).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (401, "invalid_client".into())
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("pending approval"),
        "{body}"
    );
    let pending: Value = portal
        .get(format!("{}/admin/clients?status=pending", app.mtls))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(pending["clients"][0]["client_id"], "tpp-a", "{pending}");
    assert_eq!(pending["clients"].as_array().map(Vec::len), Some(1));
    assert_eq!(act(&app, &portal, "approve").await?, 200);
    assert_eq!(
        act(&app, &portal, "approve").await?,
        409,
        "approved already"
    );
    assert_eq!(token_request(&app).await?.0, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_deletes_a_client_for_good() -> TestResult {
    let app = spawn_app().await?;
    let out = app.cli(&["clients", "delete", "tpp-a"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = app.cli(&["clients", "activate", "tpp-a"])?;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is deleted"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(token_request(&app).await?.0, 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_reloads_and_a_broken_policy_changes_nothing() -> TestResult {
    let app = spawn_app_with(with_policy(|t| t)).await?;
    let cert = app.issue_trusted(
        "portal-op",
        CertSpec::operator("portal-op", &["portal".to_string()], now()),
    )?;
    let reload = || async {
        // A new connection each time: a reload ends the ones made before it.
        let res = app
            .client(&cert)?
            .post(format!("{}/admin/reload", app.mtls))
            .send()
            .await?;
        Res::<(u16, Value)>::Ok((res.status().as_u16(), res.json().await?))
    };
    let (status, body) = reload().await?;
    assert_eq!(status, 200, "{body}");
    std::fs::write(
        app.settings.policy.dir.join("access.toml"),
        "[tokens]\naccess_token_lifetime_secs = 5\n",
    )?;
    let (status, body) = reload().await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("access.toml"),
        "names the file: {body}"
    );
    assert_eq!(
        token_request(&app).await?.0,
        200,
        "the running policy stays"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_near_its_end_is_flagged_to_the_portal_as_the_policy_says() -> TestResult {
    let app = spawn_app_with(with_policy(|t| {
        t.replace("expiry_warning_days = 30", "expiry_warning_days = 60")
    }))
    .await?;
    let portal = portal(&app)?;
    let flagged = |app: &TestApp, portal: &reqwest::Client| {
        let url = format!("{}/admin/clients/tpp-a", app.mtls);
        let portal = portal.clone();
        async move {
            let v: Value = portal.get(url).send().await?.json().await?;
            Res::<(Value, Value)>::Ok((
                v["expiring_soon"].clone(),
                v["certificates"][0]["expiring_soon"].clone(),
            ))
        }
    };
    assert_eq!(flagged(&app, &portal).await?, (false.into(), false.into()));
    let days = |field: &str| -> Res<i64> {
        let out = app.cli(&["clients", "certs", "tpp-a", "--json"])?;
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok((v[0][field].as_i64().ok_or("no such field")? - now()) / 86_400)
    };
    // Fifty days before the end: inside the policy's 60, outside the default 30.
    app.clock.advance((days("not_after")? - 50) * 86_400);
    assert_eq!(flagged(&app, &portal).await?, (true.into(), true.into()));
    Ok(())
}
