mod cli;
mod failures;
mod protocols;
mod reload;
mod split;
mod streaming;
mod telemetry;
