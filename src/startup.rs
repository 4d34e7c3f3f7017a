//! Building and running one leadgate process: store, inbox writer, worker, HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, PartnerSection, QueueKind, Role};
use crate::http::{self, AppState};
use crate::mapping::{MappingError, MappingSet};
use crate::pipeline::assign::AssignmentRuleError;
use crate::pipeline::nats_worker::NatsWorker;
use crate::pipeline::score::ScoreRuleError;
use crate::pipeline::{Assigner, Dedup, Enrich, Normalise, Pipeline, Scoring, worker::Worker};
use crate::queue::Accepter;
use crate::queue::nats::NatsQueue;
use crate::search::SearchIndex;
use crate::search::indexer::Indexer;
use crate::store::tokens::TokenCache;
use crate::store::{RequestMeta, Store, StoreError, WriteContext};
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid mapping: {0}")]
    Mapping(#[from] MappingError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid dedup configuration: {0}")]
    Dedup(#[from] matching::ConfigError),
    #[error("invalid configuration: score_rules: {0}")]
    Score(#[from] ScoreRuleError),
    #[error("invalid configuration: assignment_rules: {0}")]
    Assignment(#[from] AssignmentRuleError),
    #[error(transparent)]
    Search(#[from] crate::search::SearchError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

pub struct Application {
    port: u16,
    store: Store,
    server: Server,
    shutdown: CancellationToken,
    worker: Option<JoinHandle<()>>,
    /// The NATS partition consumers (`queue = "nats"`, roles `all` and `worker`).
    nats_worker: Option<JoinHandle<()>>,
    decay: Option<JoinHandle<()>>,
    /// SLA breaches, contract renewals, expansion rules (processing roles).
    service_evaluator: Option<JoinHandle<()>>,
    /// Sends queued WhatsApp messages (processing roles, when sending is configured).
    sender: Option<JoinHandle<()>>,
    /// Nurturing: the email sender (when a mailer is configured) and the sequence scheduler.
    email_sender: Option<JoinHandle<()>>,
    scheduler: Option<JoinHandle<()>>,
    /// Follows the outbox into the search index (roles that process).
    indexer: Option<JoinHandle<()>>,
    search: Arc<dyn SearchIndex>,
    /// The embedded queue's group-commit writer (none with `queue = "nats"`).
    writer: Option<JoinHandle<()>>,
    /// The IMAP mailbox tasks, and what stops them (before the inbox writer drains).
    mailboxes: Vec<JoinHandle<()>>,
    mailbox_shutdown: CancellationToken,
}

/// Opens the store and applies pending migrations.
pub async fn open_store(config: &Config) -> Result<Store, StoreError> {
    let store = Store::connect(&config.effective_database_url(), config.db_max_connections).await?;
    store.migrate().await?;
    Ok(store)
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let pipeline = Arc::new(build_pipeline(&config)?);
        let store = open_store(&config).await?;
        let access = crate::access::AccessPolicy::compile(&config.access)
            .map_err(|e| StartError::Config(e.to_string()))?;
        let service = pipeline.service();
        // A team tree edited into a cycle outside leadgate would make reach undefined.
        store.check_teams().await.map_err(StartError::Config)?;
        bootstrap_admin_token(&store).await?;
        let listener = TcpListener::bind(config.listen).map_err(|source| StartError::Listen {
            addr: config.listen.to_string(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartError::Listen {
                addr: config.listen.to_string(),
                source,
            })?
            .port();
        let metrics = Arc::new(Metrics::new());
        let appended = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let role = config.role;
        let (accepter, writer, nats) = match config.queue {
            QueueKind::Embedded => {
                let (accepter, writer) = Accepter::start(
                    store.clone(),
                    config.group_commit_max,
                    appended.clone(),
                    metrics.clone(),
                );
                (accepter, Some(writer), None)
            }
            QueueKind::Nats => {
                // Connects in the background: the process starts while NATS is down.
                let client = crate::queue::nats::connect(&config.nats)
                    .await
                    .map_err(|e| StartError::Config(format!("nats.url: {e}")))?;
                let queue = NatsQueue::new(
                    client.clone(),
                    config.nats.clone(),
                    store.clone(),
                    pipeline.clone(),
                );
                (Accepter::new(Arc::new(queue)), None, Some(client))
            }
        };
        let nats_worker = match (&nats, role) {
            (Some(client), Role::All | Role::Worker) => Some(
                NatsWorker {
                    client: client.clone(),
                    section: config.nats.clone(),
                    store: store.clone(),
                    pipeline: pipeline.clone(),
                    metrics: metrics.clone(),
                    batch: config.worker_batch,
                    shutdown: shutdown.clone(),
                }
                .spawn(),
            ),
            _ => None,
        };
        let worker = (role != Role::Gateway).then(|| {
            Worker {
                store: store.clone(),
                pipeline: pipeline.clone(),
                batch: config.worker_batch,
                batch_max: config.worker_batch_max,
                appended: appended.clone(),
                metrics: metrics.clone(),
                shutdown: shutdown.clone(),
            }
            .spawn()
        });
        // Planner statistics: at start and hourly, so filtered lists keep their plans as
        // the store grows.
        {
            let (store, shutdown) = (store.clone(), shutdown.clone());
            tokio::spawn(async move {
                let mut hourly = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    tokio::select! {
                        _ = hourly.tick() => {
                            if let Err(error) = store.optimize().await {
                                tracing::warn!(%error, "store optimize failed");
                            }
                            // Invoices past their due date with something owed.
                            let today = chrono::Utc::now().date_naive();
                            if let Err(error) = crate::billing::invoices::mark_overdue(&store, today).await {
                                tracing::warn!(%error, "marking overdue invoices failed");
                            }
                        }
                        () = shutdown.cancelled() => return,
                    }
                }
            });
        }
        // The audit trail's lookups by record and by actor follow the log from here, a
        // second behind (the write path appends rows without them; lookups read the
        // unindexed tail as well). Any role may run it: batches take the writer's turn
        // and start from the mark they read under it.
        {
            let (store, shutdown) = (store.clone(), shutdown.clone());
            tokio::spawn(async move {
                let mut every_second = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = every_second.tick() => {
                            if let Err(error) = store.index_audit().await {
                                tracing::warn!(%error, "indexing the audit trail failed");
                            }
                        }
                        () = shutdown.cancelled() => return,
                    }
                }
            });
        }
        let mailbox_shutdown = CancellationToken::new();
        let mailboxes = if role == Role::Worker {
            Vec::new()
        } else {
            crate::mailbox::spawn_all(
                &config,
                &crate::mailbox::MailboxContext {
                    store: store.clone(),
                    accepter: accepter.clone(),
                    metrics: metrics.clone(),
                    own_domains: config.email.own_domains.clone(),
                    max_message_bytes: config.email.max_message_bytes,
                    shutdown: mailbox_shutdown.clone(),
                },
            )
        };
        let decay = (role != Role::Gateway)
            .then(|| {
                crate::pipeline::decay::spawn(
                    store.clone(),
                    config.score_decay_per_day,
                    shutdown.clone(),
                )
            })
            .flatten();
        let sender = match (role != Role::Gateway, config.whatsapp.client_config()) {
            (true, Some(client)) => Some(
                crate::outbound::WhatsAppSender {
                    store: store.clone(),
                    client: crate::outbound::WhatsAppClient::new(client)
                        .map_err(|e| StartError::Config(format!("whatsapp: {e}")))?,
                    shutdown: shutdown.clone(),
                }
                .spawn(),
            ),
            _ => None,
        };
        let nurture_section = Arc::new(config.nurture.clone());
        let tracking_key =
            crate::nurture::tracking::TrackingKey::resolve(&store, &config.nurture.tracking_secret)
                .await
                .map_err(|e| StartError::Config(format!("nurture: {e}")))?;
        let mailer = crate::nurture::mailer::from_config(&config.nurture)
            .map_err(|e| StartError::Config(e.to_string()))?;
        let email_sender = match (role != Role::Gateway, mailer) {
            (true, Some(mailer)) => Some(
                crate::nurture::sender::EmailSender {
                    store: store.clone(),
                    mailer,
                    section: nurture_section.clone(),
                    key: tracking_key.clone(),
                    metrics: metrics.clone(),
                    shutdown: shutdown.clone(),
                }
                .spawn(),
            ),
            _ => None,
        };
        let scheduler = (role != Role::Gateway).then(|| {
            crate::nurture::scheduler::Scheduler {
                store: store.clone(),
                section: nurture_section.clone(),
                key: tracking_key.clone(),
                shutdown: shutdown.clone(),
            }
            .spawn()
        });
        let nurture_state = Arc::new(http::nurture::NurtureState {
            events: crate::nurture::engagement::EventWriter::spawn(
                store.clone(),
                nurture_section.clone(),
                crate::pipeline::score::Scoring::new(&config.score_rules)?,
            ),
            webhooks: crate::nurture::webhooks::WebhookVerifiers::from_config(&config.nurture)
                .map_err(StartError::Config)?,
            section: nurture_section,
            key: tracking_key,
        });
        // A gateway only reads the index the worker writes; it must not repair it.
        let index_access = if role == Role::Gateway {
            crate::search::Access::Read
        } else {
            crate::search::Access::Write
        };
        let search = match crate::search::open(&config.search, &config.data_dir, index_access).await
        {
            Ok(index) => index,
            Err(error) if index_access == crate::search::Access::Read => {
                tracing::error!(%error, "search index cannot be opened; search answers 503");
                Arc::new(crate::search::Unavailable(error.to_string()))
            }
            Err(error) => return Err(error.into()),
        };
        let indexer = (role != Role::Gateway).then(|| {
            Indexer {
                store: store.clone(),
                index: search.clone(),
                poll: Duration::from_millis(config.search.poll_millis.max(10)),
                shutdown: shutdown.clone(),
                outbox: crate::search::indexer::OutboxUpkeep::from_config(&config.search),
            }
            .spawn()
        });
        // SLA timers, contract renewals and expansion rules.
        let service_evaluator = (role != Role::Gateway).then(|| {
            crate::service::evaluator::spawn(
                store.clone(),
                service.clone(),
                metrics.clone(),
                shutdown.clone(),
            )
        });
        let http_workers = if config.http_workers == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            config.http_workers
        };
        let shutdown_timeout = config.shutdown_timeout_secs;
        let limiter = http::RateLimiter::new(config.rate_limit_per_minute);
        let sign_in_per_minute = config.access.sign_in_per_minute;
        let state = web::Data::new(AppState {
            limiter,
            config,
            store: store.clone(),
            accepter,
            metrics,
            appended,
            tokens: TokenCache::new(Duration::from_secs(5)),
            pipeline: pipeline.clone(),
            access,
            reach: http::caller::ReachCache::new(Duration::from_secs(5)),
            sign_in_limiter: http::RateLimiter::new(sign_in_per_minute),
            partner_limiter: http::RateLimiter::new(
                PartnerSection::default().rate_limit_per_minute,
            ),
            search: search.clone(),
            nurture: nurture_state,
            service,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::JsonConfig::default().error_handler(|error, _| {
                    http::ApiError::BadRequest(format!("malformed JSON body: {error}")).into()
                }))
                .wrap(from_fn(http::request_context))
                .configure(|cfg| http::routes(cfg, role))
                .default_service(web::to(|| async {
                    Err::<actix_web::HttpResponse, _>(http::ApiError::NotFound)
                }))
        })
        .workers(http_workers)
        .backlog(4096)
        .shutdown_timeout(shutdown_timeout)
        .listen(listener)
        .map_err(|source| StartError::Listen {
            addr: format!("port {port}"),
            source,
        })?
        .run();
        tracing::info!(port, backend = ?store.backend(), ?role, "leadgate listening");
        Ok(Self {
            port,
            store,
            server,
            shutdown,
            worker,
            nats_worker,
            decay,
            service_evaluator,
            sender,
            email_sender,
            scheduler,
            indexer,
            search,
            writer,
            mailboxes,
            mailbox_shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store(&self) -> Store {
        self.store.clone()
    }

    pub fn search(&self) -> Arc<dyn SearchIndex> {
        self.search.clone()
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM or a stop through the handle, then drains: in-flight
    /// requests finish, the inbox writer commits what it holds, the worker ends its batch.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        tracing::info!("HTTP server stopped; draining");
        // The mailbox tasks hold the inbox writer's sender: stop them first.
        self.mailbox_shutdown.cancel();
        for mailbox in self.mailboxes {
            if tokio::time::timeout(Duration::from_secs(10), mailbox)
                .await
                .is_err()
            {
                tracing::warn!("a mailbox task did not stop in time");
            }
        }
        if let Some(writer) = self.writer
            && tokio::time::timeout(Duration::from_secs(10), writer)
                .await
                .is_err()
        {
            tracing::warn!("inbox writer did not drain in time");
        }
        self.shutdown.cancel();
        if let Some(nats_worker) = self.nats_worker
            && tokio::time::timeout(Duration::from_secs(30), nats_worker)
                .await
                .is_err()
        {
            tracing::warn!("NATS worker did not finish its batches in time");
        }
        if let Some(worker) = self.worker
            && tokio::time::timeout(Duration::from_secs(30), worker)
                .await
                .is_err()
        {
            tracing::warn!("inbox worker did not finish its batch in time");
        }
        if let Some(sender) = self.sender {
            let _ = tokio::time::timeout(Duration::from_secs(20), sender).await;
        }
        for task in [self.email_sender, self.scheduler].into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
        if let Some(evaluator) = self.service_evaluator {
            let _ = tokio::time::timeout(Duration::from_secs(10), evaluator).await;
        }
        if let Some(decay) = self.decay {
            let _ = tokio::time::timeout(Duration::from_secs(10), decay).await;
        }
        if let Some(indexer) = self.indexer
            && tokio::time::timeout(Duration::from_secs(30), indexer)
                .await
                .is_err()
        {
            tracing::warn!("search indexer did not stop in time");
        }
        self.search.close().await;
        self.store.close().await;
        tracing::info!("stopped");
        served
    }
}

/// The pipeline the configuration describes; mappings are loaded and checked here, so a
/// bad mapping stops start with its file, line and field.
pub fn build_pipeline(config: &Config) -> Result<Pipeline, StartError> {
    let mappings = MappingSet::load(&config.mappings_dir)?;
    let mut match_config = matching::MatchConfig {
        merge: config.dedup_merge_threshold,
        review: config.dedup_review_threshold,
        ..Default::default()
    };
    match_config.prepare.default_region = config.default_region.clone();
    let normalise = Normalise {
        default_region: config.default_region.clone(),
        email: match_config.prepare.email.clone(),
    };
    let mut pipeline = Pipeline::new(
        mappings,
        vec![Box::new(normalise), Box::new(Enrich::default())],
        Dedup::new(match_config)?,
        Scoring::new(&config.score_rules)?,
        Assigner::new(&config.assignment_rules, config.max_open_leads_per_user)?,
    )
    .with_qualification(config.qualification)
    .with_source_priority(config.survivorship_priority.clone())
    .with_first_touch(config.whatsapp.first_touch())
    .with_service(Arc::new(
        crate::service::Service::new(config.service.clone())
            .map_err(|e| StartError::Config(e.to_string()))?,
    ));
    if config.whatsapp.first_touch().is_some() && config.whatsapp.client_config().is_none() {
        return Err(StartError::Config(
            "whatsapp.first_touch_* needs whatsapp.access_token and whatsapp.phone_number_id"
                .into(),
        ));
    }
    for (name, partner) in &config.partners {
        if let Some(mapping) = &partner.mapping {
            pipeline = pipeline
                .route(&format!("partner:{name}"), mapping)
                .map_err(|reason| {
                    StartError::Config(format!("partners.{name}.mapping: {reason}"))
                })?;
        }
    }
    for mailbox in &config.mailboxes {
        if let Some(mapping) = &mailbox.mapping {
            pipeline = pipeline
                .route(&format!("email:{}", mailbox.name), mapping)
                .map_err(|reason| {
                    StartError::Config(format!("mailboxes.{}.mapping: {reason}", mailbox.name))
                })?;
        }
    }
    for (name, form) in &config.forms {
        if let Some(mapping) = &form.mapping {
            pipeline = pipeline
                .route(&format!("form:{name}"), mapping)
                .map_err(|reason| StartError::Config(format!("forms.{name}.mapping: {reason}")))?;
        }
    }
    Ok(pipeline)
}

/// A store with no tokens at all gets one admin token, printed once, so a fresh install
/// can be used without reading any documentation first.
async fn bootstrap_admin_token(store: &Store) -> Result<(), StoreError> {
    if store.token_count().await? > 0 {
        return Ok(());
    }
    let ctx = WriteContext::new("system:bootstrap", "cli", RequestMeta::default());
    let token = store
        .create_token(&ctx, "bootstrap admin", "admin", "admin", None)
        .await?;
    eprintln!(
        "\nleadgate: created the first admin token (shown once, store it now):\n\n    {}\n",
        token.secret
    );
    Ok(())
}
