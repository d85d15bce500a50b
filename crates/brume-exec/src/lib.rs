//! One brume assignment run in the sandbox, as a provider runs it.
//!
//! [`convert`] maps the wire's types (`brume-api`) to the sandbox's and
//! back; [`run`] is one whole run of an [`Assign`] to its [`Outcome`],
//! without progress reports; [`fitness`] is the broker's seeded speed
//! challenge. The provider runs its work through the same
//! conversions, so a re-execution of a deterministic assignment elsewhere
//! (the broker settling a dispute, `brume verify-proof --reexecute`) gets
//! exactly the output and fuel an honest provider signs.

use brume_api::ServiceKind;
use brume_api::wire::{Assign, Outcome};
use brume_sandbox::{CommandRequest, Program, Sandbox};

pub mod convert;
pub mod fitness;

/// Runs `assign` on `program` (loaded in the assignment's profile) to its
/// outcome. Bad HTTP requests are a `fault:invalid_request`, as on a
/// provider.
pub async fn run(sandbox: &Sandbox, program: &Program, assign: &Assign) -> Outcome {
    let options = convert::exec_options(assign);
    match assign.kind {
        // Containers are not deterministic: nothing re-executes them.
        ServiceKind::Oci => convert::failed(
            "invalid_request",
            "an oci job is not deterministic and can't be re-executed",
        ),
        ServiceKind::Command => {
            let req = CommandRequest {
                args: assign.args.clone(),
                env: assign.env.clone(),
                stdin: assign.stdin.clone(),
                dirs: Vec::new(),
            };
            convert::command_outcome(sandbox.run(program, &req, &options).await)
        }
        ServiceKind::Http => match assign.http.as_ref().map(convert::http_request) {
            None => convert::failed("invalid_request", "an http service needs a request"),
            Some(Err(e)) => convert::failed("invalid_request", e.to_string()),
            Some(Ok(req)) => {
                convert::http_outcome(sandbox.handle_http(program, req, &options).await)
            }
        },
    }
}
