//! Customer consent flows over real mTLS: the TPP side is the `oauth2`-crate client in
//! `obgate::tpp` over rustls; the customer side is a cookie-keeping HTTP client that reads the
//! consent pages and posts their forms as a browser would.

use obgate::tpp::{self, FlowTokens, PendingFlow};
use serde_json::{Value, json};

use crate::helpers::*;

pub const ACCOUNTS: &str = "/open-banking/v3.1/aisp/accounts";
pub const PAYMENTS: &str = "/open-banking/v3.1/pisp/domestic-payments";
pub const FUNDS: &str = "/open-banking/v3.1/cbpii/funds-confirmations";

/// A browser: one cookie jar (the session cookie), no automatic redirects.
pub struct Browser {
    http: reqwest::Client,
    pub cookie: Option<String>,
    base: String,
}

/// A page the browser got: status, body, and where it was redirected.
pub struct Page {
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
}

impl Page {
    /// The value of the hidden `name` field (e.g. the CSRF token).
    pub fn hidden(&self, name: &str) -> Res<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker).ok_or(format!("no {name} field"))? + marker.len();
        let end = self.body[start..].find('"').ok_or("unterminated value")?;
        Ok(self.body[start..start + end].to_string())
    }

    /// The values of the account choices offered.
    pub fn accounts(&self) -> Vec<String> {
        self.body
            .split("name=\"account\" value=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .map(str::to_string)
            .collect()
    }
}

impl Browser {
    pub fn new(app: &TestApp) -> Res<Self> {
        Ok(Self {
            http: app.anonymous_no_redirects()?,
            cookie: None,
            base: app.public.clone(),
        })
    }

    async fn keep(&mut self, res: reqwest::Response) -> Res<Page> {
        if let Some(c) = res
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
        {
            assert!(c.contains("Secure") && c.contains("HttpOnly"), "{c}");
            self.cookie = c.split(';').next().map(str::to_string);
        }
        let location = res
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Page {
            status: res.status().as_u16(),
            location,
            body: res.text().await?,
        })
    }

    pub async fn get(&mut self, url: &str) -> Res<Page> {
        let url = if url.starts_with("https://") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        };
        let mut req = self.http.get(url);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let res = req.send().await?;
        self.keep(res).await
    }

    /// Opens the connected-apps page and signs in on its form.
    pub async fn connected_apps_sign_in(&mut self, user: &str, password: &str) -> Res<Page> {
        let page = self.get("/connected-apps").await?;
        let csrf = page.hidden("csrf")?;
        self.post(
            "/connected-apps/login",
            &[("csrf", &csrf), ("username", user), ("password", password)],
        )
        .await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Res<Page> {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let res = req.send().await?;
        self.keep(res).await
    }
}

pub fn password(app: &TestApp, user: &str) -> Res<String> {
    Ok(app
        .customers
        .iter()
        .find(|(u, _)| u == user)
        .ok_or("no such customer")?
        .1
        .clone())
}

/// A TPP: its certificate, client id, and an mTLS client.
pub struct Tpp<'a> {
    pub app: &'a TestApp,
    pub cert: &'a CertFiles,
    pub id: &'a str,
    pub http: reqwest::Client,
    /// The instance this TPP talks to (the app's own, unless `at` says otherwise).
    pub mtls: String,
    pub public: String,
}

impl<'a> Tpp<'a> {
    pub fn new(app: &'a TestApp, cert: &'a CertFiles, id: &'a str) -> Res<Self> {
        Ok(Self {
            app,
            cert,
            id,
            http: app.client(cert)?,
            mtls: app.mtls.clone(),
            public: app.public.clone(),
        })
    }

    /// The same TPP, calling another instance of the gateway.
    pub fn at(&self, instance: &Instance) -> Self {
        Self {
            app: self.app,
            cert: self.cert,
            id: self.id,
            http: self.http.clone(),
            mtls: instance.mtls.clone(),
            public: instance.public.clone(),
        }
    }

    pub async fn consent(&self, path: &str, scope: &str, body: &str) -> Res<String> {
        let token = self.app.token(self.cert, self.id, scope).await?;
        let res = self
            .http
            .post(format!("{}{path}", self.mtls))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("x-idempotency-key", uuid())
            .body(body.to_string())
            .send()
            .await?;
        let status = res.status();
        let v: Value = res.json().await?;
        if status != 201 {
            return Err(format!("consent creation failed: {status} {v}").into());
        }
        Ok(v["Data"]["ConsentId"]
            .as_str()
            .ok_or("no ConsentId")?
            .to_string())
    }

    pub async fn par(&self, scope: &str, consent_id: &str) -> Res<PendingFlow> {
        Ok(tpp::start_consent_flow(
            &self.http,
            &self.mtls,
            &self.app.settings.server.public_url,
            &format!("{}/authorize", self.public),
            self.id,
            &redirect_uri(self.id),
            scope,
            consent_id,
        )
        .await?)
    }

    pub async fn finish(&self, flow: PendingFlow, callback: &str) -> Res<FlowTokens> {
        Ok(tpp::finish_consent_flow(&self.http, flow, callback).await?)
    }

    pub async fn get(&self, token: &str, path: &str) -> Res<(u16, Value)> {
        let res = self
            .http
            .get(format!("{}{path}", self.mtls))
            .bearer_auth(token)
            .send()
            .await?;
        let status = res.status().as_u16();
        Ok((status, res.json().await.unwrap_or(Value::Null)))
    }

    pub async fn post_json(
        &self,
        token: &str,
        path: &str,
        key: Option<&str>,
        body: &Value,
    ) -> Res<(u16, Value)> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.mtls))
            .bearer_auth(token)
            .json(body);
        if let Some(k) = key {
            req = req.header("x-idempotency-key", k);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        Ok((status, res.json().await.unwrap_or(Value::Null)))
    }

    /// A `refresh_token` grant over this TPP's certificate, naming `client_id`.
    pub async fn refresh(&self, client_id: &str, refresh_token: &str) -> Res<(u16, Value)> {
        self.token_form(&[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// A raw `/token` call with this TPP's certificate.
    pub async fn token_form(&self, form: &[(&str, &str)]) -> Res<(u16, Value)> {
        let res = self
            .http
            .post(format!("{}/token", self.mtls))
            .form(form)
            .send()
            .await?;
        let status = res.status().as_u16();
        Ok((status, res.json().await?))
    }
}

pub fn uuid() -> String {
    format!("{:032x}", rand_u128())
}

fn rand_u128() -> u128 {
    let mut b = [0u8; 16];
    let _ = openssl::rand::rand_bytes(&mut b);
    u128::from_le_bytes(b)
}

/// The customer signs in at the authorize URL, picks accounts (`pick` chooses among those
/// offered) and decides; returns the redirect back to the TPP.
pub async fn customer_decides(
    app: &TestApp,
    authorize_url: &str,
    user: &str,
    pick: impl Fn(&[String]) -> Vec<String>,
    decision: &str,
) -> Res<String> {
    let mut b = Browser::new(app)?;
    let login = b.get(authorize_url).await?;
    assert_eq!(login.status, 200, "{}", login.body);
    let csrf = login.hidden("csrf")?;
    let pw = password(app, user)?;
    let consent = b
        .post(
            "/authorize/login",
            &[("csrf", &csrf), ("username", user), ("password", &pw)],
        )
        .await?;
    assert_eq!(consent.status, 200, "{}", consent.body);
    let csrf = consent.hidden("csrf")?;
    let chosen = pick(&consent.accounts());
    let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf), ("decision", decision)];
    for a in &chosen {
        form.push(("account", a));
    }
    let done = b.post("/authorize/decision", &form).await?;
    assert_eq!(done.status, 303, "{}", done.body);
    Ok(done.location.ok_or("no redirect")?)
}

pub fn first(offered: &[String]) -> Vec<String> {
    offered.iter().take(1).cloned().collect()
}

pub const AIS_ALL: &str = r#"{"Data":{"Permissions":["ReadAccountsDetail","ReadBalances","ReadTransactionsDetail","ReadTransactionsCredits","ReadTransactionsDebits"]},"Risk":{}}"#;

/// A whole AIS authorisation for `tpp` as `alice`, sharing the first account offered.
pub async fn ais_tokens(tpp: &Tpp<'_>) -> Res<(FlowTokens, String)> {
    let consent = tpp.consent(CONSENTS, "accounts", AIS_ALL).await?;
    let flow = tpp.par("openid accounts", &consent).await?;
    let callback =
        customer_decides(tpp.app, &flow.authorize_url, "alice", first, "approve").await?;
    Ok((tpp.finish(flow, &callback).await?, callback))
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

// ---------------------------------------------------------------- journeys

#[tokio::test]
async fn a_full_account_information_journey_shares_only_what_the_customer_chose() -> TestResult {
    let app = spawn_app().await?;
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let consent = tpp.consent(CONSENTS, "accounts", AIS_ALL).await?;
    let flow = tpp.par("openid accounts", &consent).await?;
    assert!(
        flow.authorize_url
            .starts_with(&format!("{}/authorize?", app.public))
    );
    let state = flow.state.clone();

    let mut b = Browser::new(&app)?;
    let login = b.get(&flow.authorize_url).await?;
    assert!(
        login.body.contains("Alpha Money"),
        "the TPP's registered name is shown"
    );
    let csrf = login.hidden("csrf")?;
    let pw = password(&app, "alice")?;
    let page = b
        .post(
            "/authorize/login",
            &[("csrf", &csrf), ("username", "alice"), ("password", &pw)],
        )
        .await?;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("Your account balances"),
        "permissions are listed"
    );
    let offered = page.accounts();
    assert_eq!(offered.len(), 2, "alice has two accounts");
    let csrf = page.hidden("csrf")?;
    let done = b
        .post(
            "/authorize/decision",
            &[
                ("csrf", &csrf),
                ("decision", "approve"),
                ("account", &offered[0]),
            ],
        )
        .await?;
    assert_eq!(done.status, 303);
    let callback = done.location.ok_or("no redirect")?;
    assert!(callback.starts_with(&redirect_uri("tpp-a")));
    assert_eq!(query_param(&callback, "state"), Some(state));
    assert_eq!(
        query_param(&callback, "iss"),
        Some(app.settings.server.public_url.clone())
    );

    let tokens = tpp.finish(flow, &callback).await?;
    assert_eq!(tokens.consent_id, consent);
    let claims = claims_of(&tokens.access_token)?;
    assert_eq!(claims["consent_id"], json!(consent));
    assert_eq!(claims["cnf"]["x5t#S256"], json!(app.tpp_a.thumbprint()?));

    let (status, list) = tpp.get(&tokens.access_token, ACCOUNTS).await?;
    assert_eq!(status, 200, "{list}");
    let listed = list["Data"]["Account"].as_array().ok_or("no accounts")?;
    assert_eq!(listed.len(), 1, "only the chosen account");
    assert_eq!(listed[0]["AccountId"], json!(offered[0]));
    assert!(
        listed[0]["Account"][0]["Identification"].is_string(),
        "ReadAccountsDetail"
    );

    let one = format!("{ACCOUNTS}/{}", offered[0]);
    let (status, bal) = tpp
        .get(&tokens.access_token, &format!("{one}/balances"))
        .await?;
    assert_eq!(status, 200, "{bal}");
    assert_eq!(bal["Data"]["Balance"][0]["Type"], json!("InterimAvailable"));

    // Transactions, paged with Links.Next until the end.
    let base = &app.settings.server.mtls_url;
    let mut next = Some(format!("{base}{one}/transactions"));
    let mut seen = 0;
    let mut pages = 0;
    while let Some(url) = next {
        let path = url
            .strip_prefix(base.as_str())
            .ok_or("Next is not on the mTLS base")?;
        let (status, page) = tpp.get(&tokens.access_token, path).await?;
        assert_eq!(status, 200, "{page}");
        let txns = page["Data"]["Transaction"]
            .as_array()
            .ok_or("no transactions")?;
        assert!(txns.iter().all(|t| t["AccountId"] == json!(offered[0])));
        assert!(
            txns.iter().all(|t| t["TransactionInformation"].is_string()),
            "Detail"
        );
        seen += txns.len();
        pages += 1;
        next = page["Links"]["Next"].as_str().map(str::to_string);
    }
    assert!(
        pages >= 2 && seen > 50,
        "{pages} pages, {seen} transactions"
    );

    // The other account was not shared.
    let other = format!("{ACCOUNTS}/{}/balances", offered[1]);
    let (status, err) = tpp.get(&tokens.access_token, &other).await?;
    assert_eq!(status, 403, "{err}");
    assert_eq!(
        err["Errors"][0]["ErrorCode"],
        json!("UK.OBIE.Resource.ConsentMismatch")
    );

    // A refresh token works (not rotated by default), from the same client and certificate.
    let refresh = tokens.refresh_token.clone().ok_or("no refresh token")?;
    let (status, body) = tpp.refresh("tpp-a", &refresh).await?;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("refresh_token").is_none(),
        "no rotation by default"
    );
    let refreshed = body["access_token"].as_str().ok_or("no token")?.to_string();
    assert_eq!(tpp.get(&refreshed, ACCOUNTS).await?.0, 200);

    // The TPP deletes the consent: every token for it stops working, and refresh too.
    let cc = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let del = tpp
        .http
        .delete(format!("{}{CONSENTS}/{consent}", app.mtls))
        .bearer_auth(cc)
        .send()
        .await?;
    assert_eq!(del.status(), 204);
    for t in [&tokens.access_token, &refreshed] {
        let (status, err) = tpp.get(t, ACCOUNTS).await?;
        assert_eq!(status, 403, "{err}");
        assert!(
            err["Message"]
                .as_str()
                .unwrap_or_default()
                .contains("no longer authorised"),
            "{err}"
        );
    }
    let (status, body) = tpp.refresh("tpp-a", &refresh).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant")),
        "{body}"
    );

    // On every route, not only the ones that read through the consent.
    let (status, err) = tpp
        .get(&tokens.access_token, &format!("{CONSENTS}/{consent}"))
        .await?;
    assert_eq!(status, 403, "{err}");

    // Each refusal is in the audit log with its reason.
    let events = app.audit().await?;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("account_not_in_consent")
                && e.status == 403
                && e.consent_id.as_deref() == Some(consent.as_str()))
    );
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("consent_not_authorised"))
    );
    assert!(
        events
            .iter()
            .any(|e| e.route == "/token" && e.reason.as_deref() == Some("invalid_grant"))
    );
    Ok(())
}

#[tokio::test]
async fn a_full_payment_journey_pays_once_whatever_is_retried() -> TestResult {
    let app = spawn_app().await?;
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let AuthorisedPayment {
        account,
        tokens,
        payment,
    } = authorised_payment(&app, &tpp, "25.50").await?;

    let before = app
        .store
        .account(&account)
        .await?
        .ok_or("no account")?
        .balance_minor;
    let key = uuid();
    let (status, first) = tpp
        .post_json(&tokens.access_token, PAYMENTS, Some(&key), &payment)
        .await?;
    assert_eq!(status, 201, "{first}");
    assert_eq!(
        first["Data"]["Status"],
        json!("AcceptedSettlementCompleted")
    );
    let (status, again) = tpp
        .post_json(&tokens.access_token, PAYMENTS, Some(&key), &payment)
        .await?;
    assert_eq!(status, 201, "{again}");
    assert_eq!(
        again["Data"]["DomesticPaymentId"],
        first["Data"]["DomesticPaymentId"]
    );
    let after = app
        .store
        .account(&account)
        .await?
        .ok_or("no account")?
        .balance_minor;
    assert_eq!(before - after, 2_550, "debited once");

    let mut altered = payment.clone();
    altered["Risk"] = json!({"PaymentContextCode": "BillPayment"});
    let (status, err) = tpp
        .post_json(&tokens.access_token, PAYMENTS, Some(&key), &altered)
        .await?;
    assert_eq!(status, 400, "same key, other body: {err}");
    let (status, err) = tpp
        .post_json(&tokens.access_token, PAYMENTS, Some(&uuid()), &payment)
        .await?;
    assert_eq!(status, 403, "a second payment on the consent: {err}");
    let (status, err) = tpp
        .post_json(&tokens.access_token, PAYMENTS, None, &payment)
        .await?;
    assert_eq!(status, 400, "no idempotency key: {err}");
    assert_eq!(
        app.store
            .account(&account)
            .await?
            .ok_or("no account")?
            .balance_minor,
        after
    );

    let cc = app.token(&app.tpp_a, "tpp-a", "payments").await?;
    let id = first["Data"]["DomesticPaymentId"].as_str().ok_or("no id")?;
    let (status, got) = tpp.get(&cc, &format!("{PAYMENTS}/{id}")).await?;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["Data"]["Status"], json!("AcceptedSettlementCompleted"));
    let other = Tpp::new(&app, &app.tpp_b, "tpp-b")?;
    let cc_b = app.token(&app.tpp_b, "tpp-b", "payments").await?;
    assert_eq!(other.get(&cc_b, &format!("{PAYMENTS}/{id}")).await?.0, 404);
    Ok(())
}

/// The idempotency key holds across instances: the same payment sent to two at once (a TPP's
/// retry that the load balancer sent elsewhere) pays once, and both get that payment.
#[tokio::test]
async fn one_payment_sent_to_two_instances_at_once_pays_once() -> TestResult {
    let app = spawn_app().await?;
    let b = app.another_instance().await?;
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let at_b = tpp.at(&b);
    for round in 0..3 {
        let p = authorised_payment(&app, &tpp, "12.34").await?;
        let balance = || async {
            Res::<i64>::Ok(
                app.store
                    .account(&p.account)
                    .await?
                    .ok_or("no account")?
                    .balance_minor,
            )
        };
        let before = balance().await?;
        let key = uuid();
        let token = &p.tokens.access_token;
        let (at_a, at_b) = tokio::join!(
            tpp.post_json(token, PAYMENTS, Some(&key), &p.payment),
            at_b.post_json(token, PAYMENTS, Some(&key), &p.payment),
        );
        let (at_a, at_b) = (at_a?, at_b?);
        assert_eq!(
            (at_a.0, at_b.0),
            (201, 201),
            "round {round}: {at_a:?} {at_b:?}"
        );
        assert_eq!(
            at_a.1["Data"]["DomesticPaymentId"], at_b.1["Data"]["DomesticPaymentId"],
            "round {round}: one payment"
        );
        assert_eq!(
            before - balance().await?,
            1_234,
            "round {round}: debited once"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_payment_must_repeat_the_consents_initiation_exactly() -> TestResult {
    let app = spawn_app().await?;
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let body = payment_body("10.00");
    let consent = tpp.consent(PAYMENT_CONSENTS, "payments", &body).await?;
    let flow = tpp.par("openid payments", &consent).await?;
    let cb = customer_decides(&app, &flow.authorize_url, "carol", first, "approve").await?;
    let tokens = tpp.finish(flow, &cb).await?;
    let v: Value = serde_json::from_str(&body)?;
    let mut payment = json!({"Data": {"ConsentId": consent, "Initiation": v["Data"]["Initiation"]}, "Risk": v["Risk"]});
    payment["Data"]["Initiation"]["InstructedAmount"]["Amount"] = json!("1000.00");
    let (status, err) = tpp
        .post_json(&tokens.access_token, PAYMENTS, Some(&uuid()), &payment)
        .await?;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["Errors"][0]["Path"], json!("Data.Initiation"));
    // The accounts token scope is not a payments token: refused by policy.
    let (ais, _) = ais_tokens(&tpp).await?;
    let (status, _) = tpp
        .post_json(&ais.access_token, PAYMENTS, Some(&uuid()), &payment)
        .await?;
    assert_eq!(status, 403);
    Ok(())
}

/// A funds-confirmation consent on alice's first account, authorised by her: the consent
/// body, its id and the tokens.
pub async fn funds_consent(tpp: &Tpp<'_>) -> Res<(String, String, FlowTokens)> {
    let alice = tpp.app.store.accounts_of("alice").await?;
    let current = alice.first().ok_or("no account")?;
    let body = format!(
        r#"{{"Data":{{"DebtorAccount":{{"SchemeName":"UK.OBIE.SortCodeAccountNumber","Identification":"{}"}}}}}}"#,
        current.identification
    );
    let consent = tpp
        .consent(FUNDS_CONSENTS, "fundsconfirmations", &body)
        .await?;
    let flow = tpp.par("openid fundsconfirmations", &consent).await?;
    let cb = customer_decides(tpp.app, &flow.authorize_url, "alice", first, "approve").await?;
    let tokens = tpp.finish(flow, &cb).await?;
    Ok((body, consent, tokens))
}

#[tokio::test]
async fn funds_confirmation_answers_yes_or_no_for_the_consented_account() -> TestResult {
    let app = spawn_app().await?;
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let (body, consent, tokens) = funds_consent(&tpp).await?;
    let ask = |amount: &str| json!({"Data": {"ConsentId": consent, "Reference": "Purchase01", "InstructedAmount": {"Amount": amount, "Currency": "GBP"}}});
    let (status, yes) = tpp
        .post_json(&tokens.access_token, FUNDS, None, &ask("1.00"))
        .await?;
    assert_eq!(status, 201, "{yes}");
    assert_eq!(yes["Data"]["FundsAvailable"], json!(true));
    let (_, no) = tpp
        .post_json(&tokens.access_token, FUNDS, None, &ask("99999999.00"))
        .await?;
    assert_eq!(no["Data"]["FundsAvailable"], json!(false));
    // Bob does not hold that account: the app is told the customer cannot approve it.
    let consent = tpp
        .consent(FUNDS_CONSENTS, "fundsconfirmations", &body)
        .await?;
    let flow = tpp.par("openid fundsconfirmations", &consent).await?;
    let mut b = Browser::new(&app)?;
    let login = b.get(&flow.authorize_url).await?;
    let csrf = login.hidden("csrf")?;
    let pw = password(&app, "bob")?;
    let page = b
        .post(
            "/authorize/login",
            &[("csrf", &csrf), ("username", "bob"), ("password", &pw)],
        )
        .await?;
    assert_eq!(page.status, 303, "{}", page.body);
    let back = page.location.ok_or("no redirect")?;
    assert!(back.starts_with(&redirect_uri("tpp-a")), "{back}");
    assert_eq!(
        query_param(&back, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_param(&back, "state"), Some(flow.state.clone()));
    Ok(())
}

// ---------------------------------------------------------------- PAR, PKCE and codes

pub async fn raw_par(tpp: &Tpp<'_>, form: &[(&str, &str)]) -> Res<(u16, Value)> {
    let res = tpp
        .http
        .post(format!("{}/par", tpp.mtls))
        .form(form)
        .send()
        .await?;
    let status = res.status().as_u16();
    Ok((status, res.json().await?))
}

pub fn claims(consent: &str) -> String {
    json!({"id_token": {"openbanking_intent_id": {"value": consent, "essential": true}}})
        .to_string()
}

pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// A domestic-payment consent bob has authorised from his first account, the tokens for it,
/// and the payment request that matches it.
pub struct AuthorisedPayment {
    pub account: String,
    pub tokens: FlowTokens,
    pub payment: Value,
}

pub async fn authorised_payment(
    app: &TestApp,
    tpp: &Tpp<'_>,
    amount: &str,
) -> Res<AuthorisedPayment> {
    let consent_body = payment_body(amount);
    let consent = tpp
        .consent(PAYMENT_CONSENTS, "payments", &consent_body)
        .await?;
    let flow = tpp.par("openid payments", &consent).await?;
    let mut b = Browser::new(app)?;
    let login = b.get(&flow.authorize_url).await?;
    let csrf = login.hidden("csrf")?;
    let pw = password(app, "bob")?;
    let page = b
        .post(
            "/authorize/login",
            &[("csrf", &csrf), ("username", "bob"), ("password", &pw)],
        )
        .await?;
    assert!(
        page.body.contains(&format!("{amount} GBP")) && page.body.contains("ACME Inc"),
        "the payment is shown"
    );
    let account = page
        .accounts()
        .first()
        .cloned()
        .ok_or("no account offered")?;
    let csrf = page.hidden("csrf")?;
    let done = b
        .post(
            "/authorize/decision",
            &[
                ("csrf", &csrf),
                ("decision", "approve"),
                ("account", &account),
            ],
        )
        .await?;
    let tokens = tpp
        .finish(flow, &done.location.ok_or("no redirect")?)
        .await?;
    let consent_json: Value = serde_json::from_str(&consent_body)?;
    let payment = json!({
        "Data": {"ConsentId": consent, "Initiation": consent_json["Data"]["Initiation"]},
        "Risk": consent_json["Risk"],
    });
    Ok(AuthorisedPayment {
        account,
        tokens,
        payment,
    })
}

/// A pushed request for an account consent with the known PKCE pair: `/par`'s answer.
pub async fn push_request(tpp: &Tpp<'_>, consent: &str) -> Res<(u16, Value)> {
    let redirect = redirect_uri(tpp.id);
    let claims = claims(consent);
    raw_par(
        tpp,
        &[
            ("client_id", tpp.id),
            ("response_type", "code"),
            ("redirect_uri", &redirect),
            ("scope", "openid accounts"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("claims", &claims),
            ("nonce", "n-0S6_WzA2Mj"),
        ],
    )
    .await
}

/// PAR with a known PKCE pair, the customer approves; returns the code.
pub async fn code_for(tpp: &Tpp<'_>, consent: &str) -> Res<String> {
    let (status, body) = push_request(tpp, consent).await?;
    assert_eq!(status, 201, "{body}");
    assert!(body["expires_in"].is_i64());
    let uri = body["request_uri"].as_str().ok_or("no request_uri")?;
    let url = format!(
        "{}/authorize?{}",
        tpp.app.public,
        serde_urlencoded::to_string([("client_id", tpp.id), ("request_uri", uri)])?
    );
    let cb = customer_decides(tpp.app, &url, "alice", first, "approve").await?;
    query_param(&cb, "code").ok_or_else(|| "no code".into())
}

async fn exchange(
    tpp: &Tpp<'_>,
    client_id: &str,
    code: &str,
    redirect: &str,
    verifier: Option<&str>,
) -> Res<(u16, Value)> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", client_id),
        ("code", code),
        ("redirect_uri", redirect),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    tpp.token_form(&form).await
}

#[tokio::test]
async fn pkce_must_be_s256_and_the_verifier_must_match() -> TestResult {
    let app = spawn_app().await?;
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let consent = tpp.consent(CONSENTS, "accounts", AAC_BODY).await?;
    let redirect = redirect_uri("tpp-a");
    let claims = claims(&consent);
    let base = [
        ("client_id", "tpp-a"),
        ("response_type", "code"),
        ("redirect_uri", redirect.as_str()),
        ("scope", "openid accounts"),
        ("claims", claims.as_str()),
    ];
    let (status, body) = raw_par(
        &tpp,
        &[
            &base[..],
            &[
                ("code_challenge", VERIFIER),
                ("code_challenge_method", "plain"),
            ],
        ]
        .concat(),
    )
    .await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_request")),
        "{body}"
    );
    let (status, body) = raw_par(&tpp, &base).await?;
    assert_eq!(status, 400, "no PKCE: {body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("PKCE")
    );

    let code = code_for(&tpp, &consent).await?;
    let (status, body) = exchange(&tpp, "tpp-a", &code, &redirect, None).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant")),
        "{body}"
    );
    let code = code_for(&tpp, &tpp.consent(CONSENTS, "accounts", AAC_BODY).await?).await?;
    let wrong = VERIFIER.replace('d', "x");
    let (status, body) = exchange(&tpp, "tpp-a", &code, &redirect, Some(&wrong)).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("PKCE")
    );
    Ok(())
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_revokes_what_it_was_exchanged_for() -> TestResult {
    let app = spawn_app().await?;
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let consent = tpp.consent(CONSENTS, "accounts", AAC_BODY).await?;
    let code = code_for(&tpp, &consent).await?;
    let redirect = redirect_uri("tpp-a");
    let (status, first) = exchange(&tpp, "tpp-a", &code, &redirect, Some(VERIFIER)).await?;
    assert_eq!(status, 200, "{first}");
    // OpenID Connect: an ID token for the client, carrying the intent id and our nonce, with a
    // pairwise subject shared by the access token.
    let id_token = claims_of(first["id_token"].as_str().ok_or("no id_token")?)?;
    assert_eq!(id_token["aud"], json!("tpp-a"));
    assert_eq!(id_token["openbanking_intent_id"], json!(consent));
    assert_eq!(id_token["nonce"], json!("n-0S6_WzA2Mj"));
    let at = claims_of(first["access_token"].as_str().ok_or("no token")?)?;
    assert_eq!(at["sub"], id_token["sub"]);
    assert!(
        at["sub"] != json!("alice") && at["sub"] != json!("tpp-a"),
        "{at}"
    );
    let access = first["access_token"].as_str().ok_or("no token")?;
    let refresh = first["refresh_token"].as_str().ok_or("no refresh")?;
    assert_eq!(tpp.get(access, ACCOUNTS).await?.0, 200);

    let (status, again) = exchange(&tpp, "tpp-a", &code, &redirect, Some(VERIFIER)).await?;
    assert_eq!(
        (status, again["error"].clone()),
        (400, json!("invalid_grant")),
        "{again}"
    );
    let (status, err) = tpp.get(access, ACCOUNTS).await?;
    assert_eq!(status, 401, "the first token is revoked: {err}");
    let (status, body) = tpp.refresh("tpp-a", refresh).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant")),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn a_code_works_only_for_its_client_certificate_and_redirect_uri() -> TestResult {
    let app = spawn_app().await?;
    let a = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let b = Tpp::new(&app, &app.tpp_b, "tpp-b")?;
    let redirect = redirect_uri("tpp-a");

    let code = code_for(&a, &a.consent(CONSENTS, "accounts", AAC_BODY).await?).await?;
    let (status, body) =
        exchange(&b, "tpp-b", &code, &redirect_uri("tpp-b"), Some(VERIFIER)).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant")),
        "another client: {body}"
    );

    let code = code_for(&a, &a.consent(CONSENTS, "accounts", AAC_BODY).await?).await?;
    let (status, body) = exchange(&b, "tpp-a", &code, &redirect, Some(VERIFIER)).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("invalid_client")),
        "another certificate: {body}"
    );

    let code = code_for(&a, &a.consent(CONSENTS, "accounts", AAC_BODY).await?).await?;
    let (status, body) = exchange(
        &a,
        "tpp-a",
        &code,
        "https://tpp-a.example/other",
        Some(VERIFIER),
    )
    .await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant")),
        "altered redirect_uri: {body}"
    );

    // An unregistered redirect_uri never gets a request_uri.
    let consent = a.consent(CONSENTS, "accounts", AAC_BODY).await?;
    let claims = claims(&consent);
    let (status, body) = raw_par(
        &a,
        &[
            ("client_id", "tpp-a"),
            ("response_type", "code"),
            ("redirect_uri", "https://evil.example/cb"),
            ("scope", "openid accounts"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("claims", &claims),
        ],
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("not registered")
    );
    // Another client's consent cannot be pushed.
    let (status, body) = raw_par(
        &b,
        &[
            ("client_id", "tpp-b"),
            ("response_type", "code"),
            ("redirect_uri", &redirect_uri("tpp-b")),
            ("scope", "openid accounts"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("claims", &claims),
        ],
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    Ok(())
}

#[tokio::test]
async fn authorize_accepts_only_a_fresh_pushed_request_once() -> TestResult {
    let app = spawn_app_with(with_policy(|t| {
        t.replace(
            "request_uri_lifetime_secs = 90",
            "request_uri_lifetime_secs = 1",
        )
    }))
    .await?;
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let mut b = Browser::new(&app)?;
    let classic = format!(
        "/authorize?response_type=code&client_id=tpp-a&redirect_uri={}&scope=accounts",
        redirect_uri("tpp-a")
    );
    let page = b.get(&classic).await?;
    assert_eq!(page.status, 400);
    assert!(
        page.body.contains("pushed authorization requests"),
        "{}",
        page.body
    );
    assert!(
        page.location.is_none(),
        "never redirects an unverified request"
    );

    let consent = tpp.consent(CONSENTS, "accounts", AAC_BODY).await?;
    let flow = tpp.par("openid accounts", &consent).await?;
    assert_eq!(b.get(&flow.authorize_url).await?.status, 200);
    let again = b.get(&flow.authorize_url).await?;
    assert_eq!(again.status, 400, "a request_uri is single-use");
    assert!(again.body.contains("already been used"));

    let flow = tpp.par("openid accounts", &consent).await?;
    app.clock.advance(2);
    let expired = b.get(&flow.authorize_url).await?;
    assert_eq!(expired.status, 400, "an expired request_uri");

    // The customer's side is audited too: each refusal with its reason.
    let events = app.audit().await?;
    let reasons: Vec<_> = events
        .iter()
        .filter(|e| e.route == "/authorize")
        .map(|e| (e.status, e.outcome.as_str(), e.reason.as_deref()))
        .collect();
    assert_eq!(
        reasons,
        [
            (400, "denied", Some("par_required")),
            (200, "allowed", None),
            (400, "denied", Some("request_uri_invalid")),
            (400, "denied", Some("request_uri_invalid")),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn the_consent_page_refuses_forged_forms_and_wrong_passwords() -> TestResult {
    let app = spawn_app().await?;
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let consent = tpp.consent(CONSENTS, "accounts", AAC_BODY).await?;
    let flow = tpp.par("openid accounts", &consent).await?;
    let mut b = Browser::new(&app)?;
    let login = b.get(&flow.authorize_url).await?;
    assert!(
        login.body.contains("<label for=\"username\">"),
        "labelled inputs"
    );
    let csrf = login.hidden("csrf")?;
    let pw = password(&app, "alice")?;
    let forged = b
        .post(
            "/authorize/login",
            &[("csrf", "forged"), ("username", "alice"), ("password", &pw)],
        )
        .await?;
    assert_eq!(forged.status, 403);
    let wrong = b
        .post(
            "/authorize/login",
            &[("csrf", &csrf), ("username", "alice"), ("password", "nope")],
        )
        .await?;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("did not match"));
    let stale = csrf;
    let csrf = wrong.hidden("csrf")?;
    assert_ne!(stale, csrf, "a failed sign-in rotates the CSRF token");
    let page = b
        .post(
            "/authorize/login",
            &[("csrf", &csrf), ("username", "alice"), ("password", &pw)],
        )
        .await?;
    assert_eq!(page.status, 200);
    let accounts = page.accounts();
    let forged = b
        .post(
            "/authorize/decision",
            &[
                ("csrf", &csrf),
                ("decision", "approve"),
                ("account", &accounts[0]),
            ],
        )
        .await?;
    assert_eq!(
        forged.status, 403,
        "the pre-login CSRF token is dead after sign-in"
    );
    let csrf = page.hidden("csrf")?;
    let bobs = app.store.accounts_of("bob").await?;
    let theirs = b
        .post(
            "/authorize/decision",
            &[
                ("csrf", &csrf),
                ("decision", "approve"),
                ("account", &bobs[0].account_id),
            ],
        )
        .await?;
    assert_eq!(
        theirs.status, 400,
        "another customer's account cannot be shared"
    );
    let denied = b
        .post(
            "/authorize/decision",
            &[("csrf", &csrf), ("decision", "deny")],
        )
        .await?;
    let cb = denied.location.ok_or("no redirect")?;
    assert_eq!(query_param(&cb, "error").as_deref(), Some("access_denied"));
    let events = app.audit().await?;
    for (route, reason) in [
        ("/authorize/login", "csrf_failed"),
        ("/authorize/login", "login_failed"),
        ("/authorize/decision", "csrf_failed"),
        ("/authorize/decision", "customer_denied"),
    ] {
        assert!(
            events.iter().any(|e| e.route == route
                && e.reason.as_deref() == Some(reason)
                && e.consent_id.as_deref().is_none_or(|c| c == consent)),
            "{route} {reason}: {events:?}"
        );
    }
    assert_eq!(
        query_param(&cb, "iss"),
        Some(app.settings.server.public_url.clone())
    );
    let cc = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let (_, got) = tpp.get(&cc, &format!("{CONSENTS}/{consent}")).await?;
    assert_eq!(got["Data"]["Status"], json!("Rejected"));
    Ok(())
}

// ---------------------------------------------------------------- refresh tokens

#[tokio::test]
async fn a_refresh_token_is_refused_from_another_client_or_certificate() -> TestResult {
    let app = spawn_app().await?;
    let a = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let b = Tpp::new(&app, &app.tpp_b, "tpp-b")?;
    let (tokens, _) = ais_tokens(&a).await?;
    let refresh = tokens.refresh_token.ok_or("no refresh token")?;
    let (status, body) = b.refresh("tpp-b", &refresh).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant")),
        "{body}"
    );
    let (status, body) = b.refresh("tpp-a", &refresh).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("invalid_client")),
        "{body}"
    );
    let (status, body) = a.refresh("tpp-a", &refresh).await?;
    assert_eq!(status, 200, "still good for its own client: {body}");
    let access = body["access_token"].as_str().ok_or("no token")?.to_string();

    // RFC 7009: revoking the refresh token ends the grant and its access tokens.
    let revoke = |client: &'static str, t: String| {
        let http = if client == "tpp-a" {
            a.http.clone()
        } else {
            b.http.clone()
        };
        let url = format!("{}/revoke", app.mtls);
        async move {
            let res = http
                .post(url)
                .form(&[
                    ("client_id", client),
                    ("token", t.as_str()),
                    ("token_type_hint", "refresh_token"),
                ])
                .send()
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(res.status().as_u16())
        }
    };
    assert_eq!(
        revoke("tpp-b", refresh.clone()).await?,
        400,
        "another client's refresh token"
    );
    assert_eq!(a.get(&access, ACCOUNTS).await?.0, 200);
    assert_eq!(revoke("tpp-a", refresh.clone()).await?, 200);
    let (status, body) = a.refresh("tpp-a", &refresh).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant")),
        "{body}"
    );
    assert_eq!(
        a.get(&access, ACCOUNTS).await?.0,
        401,
        "its access tokens are revoked too"
    );
    Ok(())
}

#[tokio::test]
async fn with_rotation_on_reusing_a_rotated_out_refresh_token_revokes_the_family() -> TestResult {
    let app = spawn_app_with(with_policy(|t| {
        t.replace(
            "refresh_token_rotation = false",
            "refresh_token_rotation = true",
        )
    }))
    .await?;
    let a = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let (tokens, _) = ais_tokens(&a).await?;
    let old = tokens.refresh_token.ok_or("no refresh token")?;
    let (status, body) = a.refresh("tpp-a", &old).await?;
    assert_eq!(status, 200, "{body}");
    let new = body["refresh_token"]
        .as_str()
        .ok_or("rotation gives a new one")?
        .to_string();
    let access = body["access_token"].as_str().ok_or("no token")?.to_string();
    assert_eq!(a.get(&access, ACCOUNTS).await?.0, 200);

    let (status, body) = a.refresh("tpp-a", &old).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant")),
        "{body}"
    );
    let (status, body) = a.refresh("tpp-a", &new).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant")),
        "the family is revoked: {body}"
    );
    assert_eq!(
        a.get(&access, ACCOUNTS).await?.0,
        401,
        "and its access tokens"
    );
    Ok(())
}

// ---------------------------------------------------------------- consent lifecycle

#[tokio::test]
async fn a_customer_withdraws_access_on_the_connected_apps_page() -> TestResult {
    let app = spawn_app().await?;
    let a = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let (tokens, _) = ais_tokens(&a).await?;
    assert_eq!(a.get(&tokens.access_token, ACCOUNTS).await?.0, 200);
    let introspect = || {
        let http = a.http.clone();
        let url = format!("{}/introspect", app.mtls);
        let token = tokens.access_token.clone();
        async move {
            let v: Value = http
                .post(url)
                .form(&[("client_id", "tpp-a"), ("token", token.as_str())])
                .send()
                .await?
                .json()
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(v)
        }
    };
    let active = introspect().await?;
    assert_eq!(active["active"], json!(true));
    assert_eq!(active["consent_id"], json!(tokens.consent_id));

    let mut b = Browser::new(&app)?;
    let login = b.get("/connected-apps").await?;
    let csrf = login.hidden("csrf")?;
    let pw = password(&app, "alice")?;
    let signed_in = b
        .post(
            "/connected-apps/login",
            &[("csrf", &csrf), ("username", "alice"), ("password", &pw)],
        )
        .await?;
    assert_eq!(signed_in.status, 303);
    let page = b.get("/connected-apps").await?;
    assert!(page.body.contains("Alpha Money"), "{}", page.body);
    let csrf = page.hidden("csrf")?;
    let forged = b
        .post(
            "/connected-apps/revoke",
            &[("csrf", "x"), ("consent_id", &tokens.consent_id)],
        )
        .await?;
    assert_eq!(forged.status, 403);
    assert_eq!(a.get(&tokens.access_token, ACCOUNTS).await?.0, 200);
    let done = b
        .post(
            "/connected-apps/revoke",
            &[("csrf", &csrf), ("consent_id", &tokens.consent_id)],
        )
        .await?;
    assert_eq!(done.status, 303);
    let (status, err) = a.get(&tokens.access_token, ACCOUNTS).await?;
    assert_eq!(status, 403, "{err}");
    assert_eq!(
        err["Errors"][0]["ErrorCode"],
        json!("UK.OBIE.Resource.InvalidConsentStatus")
    );
    assert_eq!(
        introspect().await?,
        json!({"active": false}),
        "its consent is withdrawn"
    );
    Ok(())
}

#[tokio::test]
async fn an_expired_consent_backs_nothing() -> TestResult {
    let app = spawn_app().await?;
    let a = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let expiry = obgate::clock::ob_datetime(obgate::clock::now() + time::Duration::seconds(3));
    let body = format!(
        r#"{{"Data":{{"Permissions":["ReadAccountsBasic"],"ExpirationDateTime":"{expiry}"}},"Risk":{{}}}}"#
    );
    let consent = a.consent(CONSENTS, "accounts", &body).await?;
    let never_authorised = a.consent(CONSENTS, "accounts", &body).await?;
    let flow = a.par("openid accounts", &consent).await?;
    let cb = customer_decides(&app, &flow.authorize_url, "alice", first, "approve").await?;
    let tokens = a.finish(flow, &cb).await?;
    assert_eq!(a.get(&tokens.access_token, ACCOUNTS).await?.0, 200);
    app.clock.advance(4);
    let late = a.par("openid accounts", &never_authorised).await;
    assert!(
        late.as_ref()
            .is_err_and(|e| e.to_string().contains("expired")),
        "an expired consent cannot be pushed: {:?}",
        late.map(|f| f.authorize_url)
    );
    let (status, err) = a.get(&tokens.access_token, ACCOUNTS).await?;
    assert_eq!(status, 403, "{err}");
    assert!(
        err["Message"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{err}"
    );
    let refresh = tokens.refresh_token.ok_or("no refresh token")?;
    let (status, _) = a.refresh("tpp-a", &refresh).await?;
    assert_eq!(status, 400);
    Ok(())
}

#[tokio::test]
async fn a_client_credentials_token_reads_no_account_data() -> TestResult {
    let app = spawn_app().await?;
    let a = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let cc = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let (status, err) = a.get(&cc, ACCOUNTS).await?;
    assert_eq!(status, 403, "{err}");
    assert!(
        err["Message"]
            .as_str()
            .unwrap_or_default()
            .contains("authorised"),
        "{err}"
    );
    // Basic permissions only: no account identification, no transactions.
    let consent = a.consent(CONSENTS, "accounts", AAC_BODY).await?;
    let flow = a.par("openid accounts", &consent).await?;
    let cb = customer_decides(
        &app,
        &flow.authorize_url,
        "carol",
        |o| o.to_vec(),
        "approve",
    )
    .await?;
    let tokens = a.finish(flow, &cb).await?;
    let (status, list) = a.get(&tokens.access_token, ACCOUNTS).await?;
    assert_eq!(status, 200);
    let accounts = list["Data"]["Account"].as_array().ok_or("no accounts")?;
    assert_eq!(accounts.len(), 3, "carol shared all three");
    assert!(
        accounts.iter().all(|a| a.get("Account").is_none()),
        "Basic hides identification"
    );
    let id = accounts[0]["AccountId"].as_str().ok_or("no id")?;
    let (status, _) = a
        .get(
            &tokens.access_token,
            &format!("{ACCOUNTS}/{id}/transactions"),
        )
        .await?;
    assert_eq!(status, 403, "no transaction permission");
    Ok(())
}

// ---------------------------------------------------------------- signed request objects

fn client_key() -> Res<(openssl::pkey::PKey<openssl::pkey::Private>, Value)> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)?;
    let ec = openssl::ec::EcKey::generate(&group)?;
    let mut ctx = openssl::bn::BigNumContext::new()?;
    let (mut x, mut y) = (openssl::bn::BigNum::new()?, openssl::bn::BigNum::new()?);
    ec.public_key()
        .affine_coordinates(&group, &mut x, &mut y, &mut ctx)?;
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "tpp-key-1", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(x.to_vec_padded(32)?),
        "y": URL_SAFE_NO_PAD.encode(y.to_vec_padded(32)?)});
    Ok((
        openssl::pkey::PKey::from_ec_key(ec)?,
        json!({"keys": [jwk]}),
    ))
}

fn sign_request(key: &openssl::pkey::PKey<openssl::pkey::Private>, claims: &Value) -> Res<String> {
    sign_request_typed(key, claims, "oauth-authz-req+jwt")
}

fn sign_request_typed(
    key: &openssl::pkey::PKey<openssl::pkey::Private>,
    claims: &Value,
    typ: &str,
) -> Res<String> {
    let der = key.private_key_to_pkcs8()?;
    let header = json!({"alg": "ES256", "kid": "tpp-key-1", "typ": typ});
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
    );
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_ec_der(&der),
        jsonwebtoken::Algorithm::ES256,
    )?;
    Ok(format!("{input}.{sig}"))
}

#[tokio::test]
async fn signed_request_objects_are_verified_against_the_clients_keys() -> TestResult {
    let app = spawn_app_with(with_policy(|t| {
        t.replace(
            "require_signed_request_object = false",
            "require_signed_request_object = true",
        )
    }))
    .await?;
    let meta: Value = app
        .anonymous()?
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            app.public
        ))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(meta["require_signed_request_object"], json!(true));
    assert_eq!(meta["require_pushed_authorization_requests"], json!(true));
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    let (key, jwks) = client_key()?;
    let jwks_file = app.path("tpp-a-jwks.json");
    std::fs::write(&jwks_file, jwks.to_string())?;
    // Register the keys through the CLI, for a new client on tpp-a's certificate family.
    let cert = app.issue_trusted(
        "tpp-jar",
        obgate::pki::CertSpec::tpp("Epsilon Ltd", "0015800001EPS", "tpp-jar", now()),
    )?;
    let out = app.cli(&[
        "clients",
        "register",
        "--name",
        "Epsilon",
        "--cert",
        cert.cert.to_str().ok_or("path")?,
        "--roles",
        "AISP",
        "--redirect-uri",
        &redirect_uri("tpp-jar"),
        "--jwks",
        jwks_file.to_str().ok_or("path")?,
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tpp = Tpp::new(&app, &cert, "tpp-jar")?;
    let consent = tpp.consent(CONSENTS, "accounts", AAC_BODY).await?;

    let (status, body) = raw_par(
        &tpp,
        &[
            ("client_id", "tpp-jar"),
            ("response_type", "code"),
            ("redirect_uri", &redirect_uri("tpp-jar")),
            ("scope", "openid accounts"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("claims", &claims(&consent)),
        ],
    )
    .await?;
    assert_eq!(
        status, 400,
        "unsigned requests are refused by policy: {body}"
    );

    let t = now();
    let request = json!({
        "iss": "tpp-jar", "aud": app.settings.server.public_url, "client_id": "tpp-jar", "nbf": t, "exp": t + 300,
        "response_type": "code", "redirect_uri": redirect_uri("tpp-jar"), "scope": "openid accounts",
        "state": "jar-state", "code_challenge": CHALLENGE, "code_challenge_method": "S256",
        "claims": {"id_token": {"openbanking_intent_id": {"value": consent, "essential": true}}},
    });
    let jwt = sign_request(&key, &request)?;
    let (status, body) = raw_par(&tpp, &[("client_id", "tpp-jar"), ("request", &jwt)]).await?;
    assert_eq!(status, 201, "{body}");

    let mut tampered = request.clone();
    tampered["redirect_uri"] = json!("https://evil.example/cb");
    let forged = format!(
        "{}.{}",
        jwt.rsplit_once('.')
            .map(|(i, _)| i.split_once('.').map(|(h, _)| h).unwrap_or_default())
            .unwrap_or_default(),
        {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&tampered)?)
        }
    ) + "."
        + jwt.rsplit('.').next().unwrap_or_default();
    let (status, body) = raw_par(&tpp, &[("client_id", "tpp-jar"), ("request", &forged)]).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_request_object")),
        "{body}"
    );

    let (status, body) = raw_par(
        &tpp,
        &[
            ("client_id", "tpp-jar"),
            ("request", &sign_request_typed(&key, &request, "at+jwt")?),
        ],
    )
    .await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_request_object")),
        "a token's typ is not a request object's: {body}"
    );
    let (other_key, _) = client_key()?;
    let wrong_key = sign_request(&other_key, &request)?;
    let (status, body) =
        raw_par(&tpp, &[("client_id", "tpp-jar"), ("request", &wrong_key)]).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_request_object")),
        "{body}"
    );
    let mut stale = request.clone();
    stale["exp"] = json!(t - 10);
    let (status, _) = raw_par(
        &tpp,
        &[
            ("client_id", "tpp-jar"),
            ("request", &sign_request(&key, &stale)?),
        ],
    )
    .await?;
    assert_eq!(status, 400, "expired request object");
    Ok(())
}

#[tokio::test]
async fn transactions_follow_the_granted_permissions_and_the_consent_window() -> TestResult {
    let app = spawn_app().await?;
    let a = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let from = obgate::clock::ob_datetime(obgate::clock::now() - time::Duration::days(60));
    let body = format!(
        r#"{{"Data":{{"Permissions":["ReadAccountsBasic","ReadTransactionsBasic","ReadTransactionsCredits"],"TransactionFromDateTime":"{from}"}},"Risk":{{}}}}"#
    );
    let consent = a.consent(CONSENTS, "accounts", &body).await?;
    let flow = a.par("openid accounts", &consent).await?;
    let cb = customer_decides(&app, &flow.authorize_url, "alice", first, "approve").await?;
    let tokens = a.finish(flow, &cb).await?;
    let (_, list) = a.get(&tokens.access_token, ACCOUNTS).await?;
    let id = list["Data"]["Account"][0]["AccountId"]
        .as_str()
        .ok_or("no account")?
        .to_string();
    // Asking for more than the consent's window gets the window.
    let path = format!("{ACCOUNTS}/{id}/transactions?fromBookingDateTime=2000-01-01T00:00:00");
    let (status, page) = a.get(&tokens.access_token, &path).await?;
    assert_eq!(status, 200, "{page}");
    let txns = page["Data"]["Transaction"]
        .as_array()
        .ok_or("no transactions")?;
    assert!(!txns.is_empty());
    for t in txns {
        assert_eq!(
            t["CreditDebitIndicator"],
            json!("Credit"),
            "credits only: {t}"
        );
        assert!(t.get("TransactionInformation").is_none(), "Basic: {t}");
        assert!(t["BookingDateTime"].as_str().unwrap_or_default() >= from.as_str());
    }
    assert_eq!(page["Meta"]["FirstAvailableDateTime"], json!(from));
    let (status, _) = a
        .get(&tokens.access_token, &format!("{ACCOUNTS}/{id}/balances"))
        .await?;
    assert_eq!(status, 403, "no ReadBalances");
    let (status, err) = a
        .get(
            &tokens.access_token,
            &format!("{ACCOUNTS}/{id}/transactions?page=0"),
        )
        .await?;
    assert_eq!(status, 400, "{err}");
    Ok(())
}

#[tokio::test]
async fn sign_in_pauses_after_five_failures_and_starts_a_new_session_when_it_succeeds() -> TestResult
{
    let app = spawn_app().await?;
    let pw = password(&app, "bob")?;
    let mut b = Browser::new(&app)?;
    let mut page = b.get("/connected-apps").await?;
    let before = b.cookie.clone().ok_or("no session cookie")?;
    let signed_in = b
        .post(
            "/connected-apps/login",
            &[
                ("csrf", &page.hidden("csrf")?),
                ("username", "bob"),
                ("password", &pw),
            ],
        )
        .await?;
    assert_eq!(signed_in.status, 303);
    assert_ne!(
        b.cookie.as_deref(),
        Some(before.as_str()),
        "a new session id at sign-in"
    );
    let mut old = Browser::new(&app)?;
    old.cookie = Some(before);
    let stale = old.get("/connected-apps").await?;
    assert!(
        stale.body.contains("Sign in"),
        "the pre-sign-in session is gone"
    );

    let mut b = Browser::new(&app)?;
    page = b.get("/connected-apps").await?;
    for _ in 0..5 {
        page = b
            .post(
                "/connected-apps/login",
                &[
                    ("csrf", &page.hidden("csrf")?),
                    ("username", "alice"),
                    ("password", "guess"),
                ],
            )
            .await?;
        assert_eq!(page.status, 401);
    }
    let pw = password(&app, "alice")?;
    let paused = b
        .post(
            "/connected-apps/login",
            &[
                ("csrf", &page.hidden("csrf")?),
                ("username", "alice"),
                ("password", &pw),
            ],
        )
        .await?;
    assert_eq!(paused.status, 429, "{}", paused.body);
    // A username no customer could have (a NUL byte: PostgreSQL refuses it in text) is just a
    // failed sign-in, and the audit log goes on.
    let mut odd = Browser::new(&app)?;
    let page = odd.get("/connected-apps").await?;
    let nul = odd
        .post(
            "/connected-apps/login",
            &[
                ("csrf", &page.hidden("csrf")?),
                ("username", "al\u{0}ice"),
                ("password", "x"),
            ],
        )
        .await?;
    assert_eq!(nul.status, 401);
    assert_eq!(
        odd.get("/connected-apps").await?.status,
        200,
        "the log still takes events"
    );
    assert!(
        app.audit()
            .await?
            .iter()
            .any(|e| e.psu.as_deref() == Some("al\u{fffd}ice"))
    );
    let events = app.audit().await?;
    let failed = events
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some("login_failed") && e.psu.as_deref() == Some("alice")
        })
        .count();
    assert_eq!(failed, 5);
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("login_paused"))
    );
    Ok(())
}

#[tokio::test]
async fn parallel_wrong_passwords_are_counted_before_any_is_checked() -> TestResult {
    let app = spawn_app().await?;
    let mut attempts = Vec::new();
    for _ in 0..12 {
        let mut b = Browser::new(&app)?;
        let page = b.get("/connected-apps").await?;
        let csrf = page.hidden("csrf")?;
        attempts.push((b, csrf));
    }
    let answers = futures_util::future::join_all(attempts.iter_mut().map(|(b, csrf)| {
        let csrf = csrf.clone();
        async move {
            b.post(
                "/connected-apps/login",
                &[
                    ("csrf", &csrf),
                    ("username", "alice"),
                    ("password", "guess"),
                ],
            )
            .await
        }
    }))
    .await;
    let mut statuses = Vec::new();
    for page in answers {
        statuses.push(page?.status);
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(checked <= 5, "at most five passwords checked: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "one peer, one check at a time: {statuses:?}"
    );
    let failed = app
        .audit()
        .await?
        .iter()
        .filter(|e| e.reason.as_deref() == Some("login_failed"))
        .count();
    assert!(failed <= 5, "{failed} passwords were checked");
    // Alice is paused now, whatever she types.
    let pw = password(&app, "alice")?;
    let paused = Browser::new(&app)?
        .connected_apps_sign_in("alice", &pw)
        .await?;
    assert_eq!(paused.status, 429, "{}", paused.body);
    Ok(())
}

#[tokio::test]
async fn the_connected_apps_sign_in_form_refuses_a_csrf_token_without_its_cookie() -> TestResult {
    let app = spawn_app().await?;
    let mut b = Browser::new(&app)?;
    let page = b.get("/connected-apps").await?;
    let csrf = page.hidden("csrf")?;
    let pw = password(&app, "bob")?;
    let mut forger = Browser::new(&app)?;
    let forged = forger
        .post(
            "/connected-apps/login",
            &[("csrf", &csrf), ("username", "bob"), ("password", &pw)],
        )
        .await?;
    assert_eq!(forged.status, 403, "{}", forged.body);
    let other = b
        .post(
            "/connected-apps/login",
            &[
                ("csrf", "not-the-token"),
                ("username", "bob"),
                ("password", &pw),
            ],
        )
        .await?;
    assert_eq!(other.status, 403, "{}", other.body);
    let ok = b.connected_apps_sign_in("bob", &pw).await?;
    assert_eq!(ok.status, 303, "{}", ok.body);
    Ok(())
}
