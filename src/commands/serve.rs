//! `serve` and `demo`: run the gateway until SIGTERM.

use super::*;

pub(super) fn serve(
    path: &Path,
    format: crate::logging::LogFormat,
    demo: bool,
) -> anyhow::Result<ExitCode> {
    crate::logging::init(format);
    if demo {
        // The demo is opened in a browser: sessions and the sign-in page on,
        // for this config and every reload of it.
        crate::config::enable_demo_sessions();
    }
    let config = load(path)?;
    // The control plane (signals, reload, admin listener, health checks): one
    // thread is plenty; connections are served by the workers (SPEC §13).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("authgate")
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async move {
        if demo {
            let target = config
                .upstreams
                .first()
                .and_then(|u| u.targets.first())
                .ok_or_else(|| anyhow!("demo needs an [[upstream]] with a target for its example backend"))?;
            let addr: SocketAddr = target
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| anyhow!("cannot resolve demo backend address {target}"))?;
            let bound = crate::demo::spawn_backend(addr).await.map_err(|e| anyhow!(e))?;
            tracing::info!("demo backend listening on {bound}");
            if let Some(gw) = config.server.listen.first() {
                let p = &config.identity.paths;
                let url = format!("http://{gw}");
                eprintln!(
                    "\nTry it:\n  curl -s -X POST {url}{} -H 'Content-Type: application/json' -d '{{\"username\":\"alice\",\"password\":\"correct horse\"}}'\n  \
                     TOKEN=$(curl -s -X POST {url}{} -H 'Content-Type: application/json' -d '{{\"username\":\"alice\",\"password\":\"correct horse\"}}' | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')\n  \
                     curl -s {url}/protected -H \"Authorization: Bearer $TOKEN\"\n  curl -s {url}/hello\n\
                     \nOr, once alice is registered (the first command), open {url}/protected in a browser and sign in.\n",
                    p.register, p.login
                );
            }
        }
        crate::server::run(path.to_path_buf(), config).await.map_err(|e| anyhow!(e))
    });
    crate::logging::flush();
    result?;
    Ok(ExitCode::SUCCESS)
}
