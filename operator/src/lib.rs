//! The LFUSYS Kubernetes operator: reconciles `LfusysCluster` resources into the services'
//! Deployments, Services, ConfigMap, ServiceAccount, PodDisruptionBudgets and Ingress, and sizes
//! the upload workers from the assembly queue's depth.
//!
//! Layout: [`autoscaler`] and [`conditions`] are pure domain logic; [`build`] holds one pure
//! builder per child object; [`reconcile`] (the pipeline dereference → scale → build → apply →
//! status, one module per step), [`leader`] and [`queue`] talk to the API server and SQS; [`run`]
//! wires them into a controller.

pub mod autoscaler;
pub mod build;
pub mod conditions;
pub mod config;
pub mod leader;
pub mod queue;
pub mod reconcile;
mod run;

pub use run::run;
