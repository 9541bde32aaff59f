mod cli;
mod failures;
mod protocols;
mod reload;
mod rollout;
mod split;
mod streaming;
mod telemetry;
