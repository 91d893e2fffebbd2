//! ACME (RFC 8555): an account per directory and one certificate per host,
//! proven with HTTP-01, which the router answers on its plain HTTP port
//! (the ACME server must reach it as `http://<host>/`, port 80).
//!
//! The key is generated here (ECDSA P-256) and only its CSR leaves; the
//! caller stores the chain and key in one record. Every step has a time
//! limit, so an ACME server that stops answering fails the attempt (the
//! caller backs off) instead of hanging the renewal loop.

use std::path::Path;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

/// Why an account or a certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcmeError {
    /// The ACME server refused or failed a request.
    #[error("{what}: {source}")]
    Server {
        what: &'static str,
        #[source]
        source: instant_acme::Error,
    },
    /// The order went a way it should not.
    #[error("{0}")]
    Order(String),
    /// A step took longer than its limit.
    #[error("the ACME server did not answer within {0:?} ({1})")]
    Timeout(Duration, &'static str),
}

/// How long one request or one wait may take.
const STEP_LIMIT: Duration = Duration::from_secs(60);

async fn step<T>(
    what: &'static str,
    future: impl Future<Output = Result<T, instant_acme::Error>>,
) -> Result<T, AcmeError> {
    match tokio::time::timeout(STEP_LIMIT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(AcmeError::Server { what, source }),
        Err(_) => Err(AcmeError::Timeout(STEP_LIMIT, what)),
    }
}

fn builder(ca_bundle: Option<&Path>) -> Result<instant_acme::AccountBuilder, AcmeError> {
    let built = match ca_bundle {
        Some(path) => Account::builder_with_root(path),
        None => Account::builder(),
    };
    built.map_err(|source| AcmeError::Server {
        what: "preparing the HTTPS client",
        source,
    })
}

/// The account: restored from `stored` credentials (JSON), or registered
/// (terms agreed) and returned with its new credentials to store.
pub(crate) async fn account(
    directory: &str,
    contact: &str,
    ca_bundle: Option<&Path>,
    stored: Option<&str>,
) -> Result<(Account, Option<String>), AcmeError> {
    if let Some(json) = stored
        && let Ok(credentials) = serde_json::from_str::<AccountCredentials>(json)
    {
        let account = step(
            "restoring the account",
            builder(ca_bundle)?.from_credentials(credentials),
        )
        .await?;
        return Ok((account, None));
    }
    let contacts: Vec<&str> = if contact.is_empty() {
        Vec::new()
    } else {
        vec![contact]
    };
    let (account, credentials) = step(
        "registering an account",
        builder(ca_bundle)?.create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.to_owned(),
            None,
        ),
    )
    .await?;
    let json = serde_json::to_string(&credentials)
        .map_err(|error| AcmeError::Order(format!("cannot keep the account: {error}")))?;
    Ok((account, Some(json)))
}

/// Where HTTP-01 answers go while an order is pending.
pub(crate) trait ChallengeBoard {
    fn publish(&self, token: &str, key_authorization: &str);
    fn withdraw(&self, token: &str);
}

impl ChallengeBoard for launchway_router::Router {
    fn publish(&self, token: &str, key_authorization: &str) {
        self.set_acme_challenge(token, key_authorization);
    }
    fn withdraw(&self, token: &str) {
        self.remove_acme_challenge(token);
    }
}

/// A certificate for `host`: the PEM chain and the PEM private key.
pub(crate) async fn issue(
    account: &Account,
    host: &str,
    board: &impl ChallengeBoard,
) -> Result<(String, String), AcmeError> {
    let identifiers = [Identifier::Dns(host.to_owned())];
    let mut order = step(
        "creating an order",
        account.new_order(&NewOrder::new(&identifiers)),
    )
    .await?;
    let mut published = Vec::new();
    let outcome = async {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(|source| AcmeError::Server {
                what: "reading an authorization",
                source,
            })?;
            match authorization.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(AcmeError::Order(format!(
                        "the authorization for {host} is {other:?}"
                    )));
                }
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| {
                    AcmeError::Order(format!("the ACME server offers no HTTP-01 challenge for {host}"))
                })?;
            board.publish(&challenge.token, challenge.key_authorization().as_str());
            published.push(challenge.token.clone());
            step("answering the challenge", challenge.set_ready()).await?;
        }
        let policy = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(STEP_LIMIT);
        let status = step("waiting for validation", order.poll_ready(&policy)).await?;
        if status != OrderStatus::Ready {
            let detail = order
                .refresh()
                .await
                .ok()
                .and_then(|state| state.error.as_ref().map(ToString::to_string))
                .unwrap_or_else(|| format!("the order is {status:?}"));
            return Err(AcmeError::Order(format!(
                "{host} was not validated: {detail} (the ACME server must reach http://{host}/.well-known/acme-challenge/ on port 80)"
            )));
        }
        let key = rcgen::KeyPair::generate()
            .map_err(|error| AcmeError::Order(format!("cannot make a key: {error}")))?;
        let params = rcgen::CertificateParams::new(vec![host.to_owned()])
            .map_err(|error| AcmeError::Order(format!("cannot make a request for {host}: {error}")))?;
        let csr = params
            .serialize_request(&key)
            .map_err(|error| AcmeError::Order(format!("cannot sign the request: {error}")))?;
        step("finalizing the order", order.finalize_csr(csr.der())).await?;
        let chain = step("downloading the certificate", order.poll_certificate(&policy)).await?;
        Ok((chain, key.serialize_pem()))
    }
    .await;
    for token in published {
        board.withdraw(&token);
    }
    outcome
}
