//! Several scenarios in a row, and the standard set of them.

use std::time::Duration;

use super::{LoadTestError, LoadTestResults, LoadTestScenario, LoadTestType, LoadTester};

/// Scenarios run one after another.
#[derive(Debug, Clone, Default)]
pub struct LoadTestSuite {
    scenarios: Vec<LoadTestScenario>,
}

impl LoadTestSuite {
    /// A suite of `scenarios`, run in this order.
    pub fn new(scenarios: Vec<LoadTestScenario>) -> Self {
        Self { scenarios }
    }

    /// Its scenarios.
    pub fn scenarios(&self) -> &[LoadTestScenario] {
        &self.scenarios
    }

    /// Runs every scenario in turn; the first that cannot run (a bad scenario, an
    /// unreachable target) ends the suite with its error.
    pub async fn run_all(&self) -> Result<Vec<LoadTestResults>, LoadTestError> {
        let mut results = Vec::with_capacity(self.scenarios.len());
        for scenario in &self.scenarios {
            results.push(LoadTester::new(scenario.clone()).run().await?);
        }
        Ok(results)
    }
}

/// One scenario of each shape against `url`, each sized to finish in a minute or two
/// (about seven minutes in all), with the circuit-breaker and pool validations on.
pub fn create_resilience_test_scenarios(url: &str) -> Vec<LoadTestScenario> {
    let base = |name: &str, test_type, max_users, seconds| LoadTestScenario {
        name: name.to_owned(),
        test_type,
        max_users,
        duration: Duration::from_secs(seconds),
        target_url: url.to_owned(),
        validate_circuit_breakers: true,
        validate_connection_pools: true,
        ..Default::default()
    };
    vec![
        base("resilience_spike", LoadTestType::Spike, 100, 30),
        base("resilience_ramp_up", LoadTestType::RampUp, 100, 60),
        base("resilience_sustained", LoadTestType::Sustained, 50, 60),
        LoadTestScenario { steps: 6, ..base("resilience_stress", LoadTestType::Stress, 300, 90) },
        base("resilience_volume", LoadTestType::Volume, 10, 30),
        base("resilience_endurance", LoadTestType::Endurance, 20, 120),
    ]
}
