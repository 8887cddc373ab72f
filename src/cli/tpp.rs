//! `obgate tpp`: what a TPP developer runs first.

use std::process::ExitCode;

use anyhow::Context;

use crate::pki::DevPki;

use super::{Cli, TppCommand, TppTls, settings};

pub(super) async fn tpp_command(cli: &Cli, cmd: &TppCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TppCommand::Token {
            tls: TppTls { cert, key, ca },
            scope,
            url,
            client_id,
        } => {
            let s = settings(cli)?;
            let ca = ca
                .clone()
                .unwrap_or_else(|| DevPki::new(&cli.data_dir).path("ca.pem"));
            let url = url.clone().unwrap_or(s.server.mtls_url);
            let body = crate::tpp::client_credentials_token(
                cert,
                key,
                &ca,
                &url,
                client_id.as_deref(),
                Some(scope),
            )
            .await?;
            println!("{body}");
            Ok(ExitCode::SUCCESS)
        }
        TppCommand::ConsentFlow {
            tls: TppTls { cert, key, ca },
            scope,
            consent_id,
            amount,
            debtor_account,
            redirect_uri,
            client_id,
            url,
            issuer,
        } => {
            let s = settings(cli)?;
            let ca = ca
                .clone()
                .unwrap_or_else(|| DevPki::new(&cli.data_dir).path("ca.pem"));
            let mtls = url.clone().unwrap_or(s.server.mtls_url);
            let issuer = issuer.clone().unwrap_or(s.server.public_url);
            let client_id = match client_id {
                Some(id) => id.clone(),
                None => crate::tpp::client_id_of(cert)?,
            };
            let http = crate::tpp::mtls_client(cert, key, &ca)?;
            let consent_id = match consent_id {
                Some(id) => id.clone(),
                None => {
                    let token: serde_json::Value = serde_json::from_str(
                        &crate::tpp::client_credentials_token(
                            cert,
                            key,
                            &ca,
                            &mtls,
                            Some(&client_id),
                            Some(scope),
                        )
                        .await?,
                    )?;
                    let access = token["access_token"].as_str().unwrap_or_default();
                    let id = crate::tpp::create_consent(
                        &http,
                        &mtls,
                        access,
                        scope,
                        amount,
                        debtor_account.as_deref(),
                    )
                    .await?;
                    eprintln!("created consent {id}");
                    id
                }
            };
            let flow = crate::tpp::start_consent_flow(
                &http,
                &mtls,
                &issuer,
                &format!("{issuer}/authorize"),
                &client_id,
                redirect_uri,
                &format!("openid {scope}"),
                &consent_id,
            )
            .await?;
            eprintln!(
                "\nOpen this in a browser and sign in as a sandbox customer:\n\n  {}\n",
                flow.authorize_url
            );
            eprintln!("Then paste the address the browser was sent to ({redirect_uri}?code=...):");
            let mut callback = String::new();
            std::io::stdin()
                .read_line(&mut callback)
                .context("reading the callback URL from stdin")?;
            let tokens = crate::tpp::finish_consent_flow(&http, flow, callback.trim()).await?;
            println!("{}", serde_json::to_string_pretty(&tokens)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
