//! `kubesim serve`: a simulated Kubernetes API server for demos and manual
//! testing. Prints nothing but its URL; stops on Ctrl-C.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kubesim::{Config, ControllerConfig, KubeSim};

#[derive(Parser)]
#[command(
    name = "kubesim",
    version,
    about = "A simulated Kubernetes API server (a test double, not a cluster)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the simulated API over plain HTTP.
    Serve {
        /// Port to listen on (0 picks a free one).
        #[arg(long, default_value_t = 6443)]
        port: u16,
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// Write a kubeconfig for kubectl and kube-rs here.
        #[arg(long)]
        kubeconfig_out: Option<PathBuf>,
        /// Namespaces to create at start (besides default, kube-system, kube-public).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// Delay before simulated pods are ready, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        pod_ready_ms: u64,
        /// Run time of simulated job pods, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        job_duration_ms: u64,
        /// Number of events kept for resuming watches.
        #[arg(long, default_value_t = 200_000)]
        history: usize,
        /// Disable the simulated controllers.
        #[arg(long)]
        no_controllers: bool,
        /// Authenticate by bearer token and authorize with RBAC (Roles,
        /// ClusterRoles, bindings); the kubeconfig of --kubeconfig-out is
        /// then the admin's.
        #[arg(long)]
        rbac: bool,
        /// With --rbac, treat requests without credentials as the admin
        /// (kubectl never sends credentials over plain HTTP).
        #[arg(long, requires = "rbac")]
        unauthenticated_as_admin: bool,
        /// Write a kubeconfig with a minted token of the service account
        /// NS/NAME to FILE (repeatable; useful with --rbac).
        #[arg(long = "service-account-kubeconfig", value_name = "NS/NAME=FILE")]
        service_accounts: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            port,
            bind,
            kubeconfig_out,
            namespaces,
            pod_ready_ms,
            job_duration_ms,
            history,
            no_controllers,
            rbac,
            unauthenticated_as_admin,
            service_accounts,
        } => {
            let mut config = Config {
                addr: SocketAddr::new(bind, port),
                history_window: history,
                rbac,
                unauthenticated_as_admin,
                ..Config::default()
            };
            config.namespaces.extend(namespaces);
            config.controllers =
                if no_controllers { ControllerConfig::none() } else { ControllerConfig::default() };
            config.controllers.pod_ready_delay = Duration::from_millis(pod_ready_ms);
            config.controllers.job_duration = Duration::from_millis(job_duration_ms);
            let sim = KubeSim::start_with(config).await.context("starting kubesim")?;
            if let Some(path) = kubeconfig_out {
                std::fs::write(&path, sim.kubeconfig("default"))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            for spec in &service_accounts {
                let parsed = spec
                    .split_once('=')
                    .and_then(|(sa, file)| sa.split_once('/').map(|(ns, name)| (ns, name, file)));
                let Some((ns, name, file)) = parsed else {
                    anyhow::bail!("--service-account-kubeconfig {spec:?}: expected NS/NAME=FILE");
                };
                std::fs::write(file, sim.service_account_kubeconfig(ns, name, ns))
                    .with_context(|| format!("writing {file}"))?;
            }
            println!("kubesim listening on {}", sim.url());
            sim.serve_until(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
            Ok(())
        }
    }
}
