//! `nodeagent __ray-member` (hidden): the engine process of `serve --role ray-head|ray-worker`
//! (`supervise::ray`). Turns the arguments `serve` wrote into a `MemberSpec` and runs it on a
//! one-thread runtime; SIGTERM is a clean stop (exit 0), a failed cluster exits 1.

use anyhow::Context;

use crate::cli::{RayMemberArgs, RayMemberRole};
use crate::config::ray::{RayRole, RaySettings};
use crate::exit::{CmdError, ResultExt};
use crate::supervise::ray::member::{self, MemberSpec};

pub fn run(args: RayMemberArgs) -> Result<(), CmdError> {
    let spec = MemberSpec {
        settings: RaySettings {
            role: match args.role {
                RayMemberRole::Head => RayRole::Head,
                RayMemberRole::Worker => RayRole::Worker,
            },
            ray: args.ray,
            head: args.head,
            port: args.port,
            node_ip: args.node_ip,
            dashboard_port: args.dashboard_port,
            expected_nodes: args.expected_nodes,
            expected_gpus: args.expected_gpus,
            num_gpus: Some(args.num_gpus),
            join_timeout: args.join_timeout,
            start_args: args.start_arg,
        },
        health_listen: args.health_listen,
        state_dir: args.state_dir,
        engine: args.engine,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .failed()?;
    rt.block_on(member::run(spec)).map_err(anyhow::Error::from).failed()
}
