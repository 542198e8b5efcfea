//! `orchestrator serve` and `orchestrator token`: the REST API of
//! `orchestrator-http` as a server, and tokens for it.
//!
//! The server takes part in running the store's jobs (`Recovery::All`): on
//! an embedded store it resumes every unfinished job at start; on a store
//! several servers share (MongoDB) it claims queued jobs and jobs whose
//! lease lapsed, every heartbeat, up to `--capacity` (see
//! `orchestrator_core::store::lease`). Any server answers the API for any
//! job. SIGTERM or Ctrl-C drains it: it stops accepting connections, ends
//! the open event streams, lets requests in progress answer, releases its
//! leases (so other servers take its jobs over at their next heartbeat) and
//! exits. Every state change was journaled before it was acted on, so
//! nothing is lost; attempts still running are recorded as interrupted by
//! whoever resumes the job and retried by their policy.

use std::collections::BTreeSet;
use std::time::Duration;

use orchestrator_core::runner::{ProcessConfig, ProcessRunner};
use orchestrator_core::{Executor, Recovery, Registry};
use orchestrator_http::{
    router, ApiState, AuthConfig, HttpConfig, NodePolicy, RateLimit, ADMIN_ROLE, BASE_PATH,
};

use crate::cli::{JwtArgs, KeyAlgorithm, ServeArgs, TokenArgs};
use crate::error::{CliError, EXIT_OK};
use crate::progress::Sink;
use crate::store::open_store;

/// How long the `--dev` token is valid.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// The HS256 config from `--jwt-secret` and the claims flags.
fn secret_auth(jwt: &JwtArgs, secret: &str) -> Result<AuthConfig, CliError> {
    let mut auth = AuthConfig::hs256(secret)
        .map_err(|e| CliError::Usage(format!("--jwt-secret / JWT_SECRET_KEY: {e}")))?;
    if let Some(iss) = &jwt.jwt_issuer {
        auth = auth.issuer(iss.clone());
    }
    if let Some(aud) = &jwt.jwt_audience {
        auth = auth.audience(aud.clone());
    }
    Ok(auth)
}

/// The token policy of `serve`, and whether a secret was generated.
fn serve_auth(args: &ServeArgs) -> Result<(AuthConfig, bool), CliError> {
    if let Some(path) = &args.jwt_public_key {
        let pem = std::fs::read(path).map_err(|e| {
            CliError::Usage(format!(
                "cannot read --jwt-public-key {}: {e}",
                path.display()
            ))
        })?;
        let auth = match args.jwt_algorithm {
            Some(KeyAlgorithm::Es256) => AuthConfig::es256_pem(&pem),
            _ => AuthConfig::rs256_pem(&pem),
        }
        .map_err(|e| CliError::Usage(format!("--jwt-public-key: {e}")))?;
        let mut auth = auth;
        if let Some(iss) = &args.jwt.jwt_issuer {
            auth = auth.issuer(iss.clone());
        }
        if let Some(aud) = &args.jwt.jwt_audience {
            auth = auth.audience(aud.clone());
        }
        return Ok((auth, false));
    }
    match (&args.jwt.jwt_secret, args.dev) {
        (Some(secret), _) => Ok((secret_auth(&args.jwt, secret)?, false)),
        (None, true) => {
            let secret = format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>());
            Ok((secret_auth(&args.jwt, &secret)?, true))
        }
        (None, false) => Err(CliError::Usage(
            "no JWT secret: set JWT_SECRET_KEY (or --jwt-secret, or --jwt-public-key), or use --dev to generate one for this run".into(),
        )),
    }
}

/// `orchestrator serve`.
pub(crate) async fn serve(args: ServeArgs) -> Result<u8, CliError> {
    let (auth, generated) = serve_auth(&args)?;
    let store_name = args.store.store.to_string();
    let store = open_store(&args.store.store).await?;

    // The process runner is held to the same command list as submissions,
    // so a job resumed from the store cannot run anything else either.
    let commands: BTreeSet<String> = args
        .allow_process_commands
        .iter()
        .filter(|c| !c.is_empty())
        .cloned()
        .collect();
    let mut process = ProcessConfig::default();
    process.allowed_commands = Some(commands.clone());
    let mut registry = Registry::with_builtins();
    registry.register("process", ProcessRunner::new(process));

    let builder = Executor::builder(store.clone())
        .recovery(Recovery::All)
        .registry(registry)
        .config(args.exec.config()?);
    // Subscribed before the start, so the jobs it resumes are notified too.
    let notifications = args.notify.start(builder.subscribe(), store)?;
    let executor = builder
        .start()
        .await
        .map_err(|e| CliError::from_executor(e, "", &store_name))?;
    for failure in executor.recovery_failures() {
        tracing::error!(job = %failure.job, error = %failure.error, "job could not be resumed");
    }
    let resumed = executor.active_jobs().await.map(|j| j.len()).unwrap_or(0);

    let mut policy = NodePolicy::empty();
    for kind in args.allow_node_types.iter().filter(|t| !t.is_empty()) {
        policy = policy.allow_type(kind.clone());
    }
    let mut config = HttpConfig::default();
    config.nodes = policy.allow_process(commands);
    config.rate_limit = (args.rate_limit > 0).then_some(RateLimit {
        requests_per_minute: args.rate_limit,
    });
    config.max_body_bytes = usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX);
    let dev_token = if args.dev {
        Some(
            auth.mint("dev", &[ADMIN_ROLE.to_owned()], DEV_TOKEN_TTL)
                .map_err(|e| CliError::Usage(format!("--dev: {e}")))?,
        )
    } else {
        None
    };
    let state = ApiState::builder(executor, auth).config(config).build();

    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|source| CliError::Internal {
            what: "listen on the --bind address",
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| CliError::Internal {
        what: "read the listening address",
        source,
    })?;
    let url = format!("http://{addr}{BASE_PATH}");
    let out = Sink::Stdout;
    out.line(&format!(
        "listening on {url} (docs: {url}/docs), store {store_name}"
    ));
    if resumed > 0 {
        out.line(&format!(
            "resumed {resumed} unfinished job{}",
            if resumed == 1 { "" } else { "s" }
        ));
    }
    if let Some(token) = &dev_token {
        if generated {
            out.line("dev mode: generated a JWT secret for this run; its tokens stop working when the server stops");
        }
        out.line(&format!(
            "dev token (sub=dev, role admin, valid 12h): {token}"
        ));
        out.line(&format!(
            "  curl -H \"Authorization: Bearer {token}\" {url}/jobs"
        ));
    }

    let app = router(state.clone());
    let draining = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            stop_signal().await;
            tracing::info!("shutting down: no new connections, closing event streams");
            draining.shutdown();
        })
        .await
        .map_err(|source| CliError::Internal {
            what: "serve HTTP",
            source,
        })?;
    let unfinished = state
        .executor()
        .active_jobs()
        .await
        .map(|j| j.len())
        .unwrap_or(0);
    // Hand the leases back, so that other processes sharing the store take
    // these jobs over at their next heartbeat rather than after the TTL.
    let executor = state.executor().clone();
    drop(state);
    executor.stop().await;
    crate::notify::close(notifications).await;
    out.line(&format!(
        "stopped; {unfinished} unfinished job{} journaled, resumed at the next start or by another process",
        if unfinished == 1 { "" } else { "s" }
    ));
    Ok(EXIT_OK)
}

/// Completes at SIGTERM or Ctrl-C.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot catch SIGTERM; only Ctrl-C stops the server gracefully");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `orchestrator token`.
pub(crate) fn token(args: &TokenArgs) -> Result<u8, CliError> {
    let secret = args.jwt.jwt_secret.as_deref().ok_or_else(|| {
        CliError::Usage(
            "no JWT secret: set JWT_SECRET_KEY or pass --jwt-secret (the server's secret)".into(),
        )
    })?;
    if args.sub.is_empty() {
        return Err(CliError::Usage("--sub must not be empty".into()));
    }
    let auth = secret_auth(&args.jwt, secret)?;
    let token = auth
        .mint(&args.sub, &args.roles, args.ttl)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Sink::Stdout.line(&token);
    Ok(EXIT_OK)
}
