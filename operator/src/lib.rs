//! The LFUSYS Kubernetes operator: reconciles `LfusysCluster` resources into the services'
//! Deployments, Services, ConfigMap, ServiceAccount, PodDisruptionBudgets and Ingress, and sizes
//! the upload workers from the assembly queue's depth.
//!
//! Layout: [`autoscaler`] and [`conditions`] are pure domain logic; [`build`] holds one pure
//! builder per child object; [`reconciler`], [`leader`] and [`queue`] talk to the API server and
//! SQS; [`run`] wires them into a controller.

pub mod autoscaler;
pub mod build;
pub mod conditions;
pub mod config;
pub mod leader;
pub mod queue;
pub mod reconciler;
mod run;

pub use run::run;
