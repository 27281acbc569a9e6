//! Timeouts, async and blocking.

use std::time::Duration;

use resilience::{ResilienceError, Timeout};

#[tokio::test(start_paused = true)]
async fn an_async_call_times_out_on_the_tokio_clock() {
    let t = Timeout::new("slow", Duration::from_secs(2)).unwrap();
    let start = tokio::time::Instant::now();
    let r = t.call(tokio::time::sleep(Duration::from_secs(60))).await;
    let err = r.unwrap_err();
    assert!(matches!(err, ResilienceError::Timeout { timeout, .. } if timeout == Duration::from_secs(2)));
    assert_eq!(err.name(), "slow");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(t.call(async { 5 }).await, Ok(5));
    let r = t.call(async {
        tokio::time::sleep(Duration::from_millis(1999)).await;
        6
    });
    assert_eq!(r.await, Ok(6));
}

#[test]
fn a_blocking_call_gets_its_timeout_on_time() {
    let t = Timeout::new("disk", Duration::from_millis(30)).unwrap();
    let start = std::time::Instant::now();
    let r = t.call_blocking(|| std::thread::sleep(Duration::from_millis(600)));
    assert!(matches!(r, Err(ResilienceError::Timeout { .. })));
    assert!(start.elapsed() < Duration::from_millis(500), "returned after {:?}", start.elapsed());
    assert_eq!(t.call_blocking(|| 9), Ok(9));
}

#[test]
fn a_borrowing_blocking_call_reports_its_overrun_when_it_returns() {
    let t = Timeout::new("disk", Duration::from_millis(10)).unwrap();
    let data = [1, 2, 3];
    let r = t.call_blocking_in_place(|| {
        std::thread::sleep(Duration::from_millis(30));
        data.len()
    });
    assert!(matches!(r, Err(ResilienceError::Timeout { .. })));
    assert_eq!(t.call_blocking_in_place(|| data.len()), Ok(3));
}

#[test]
fn zero_is_not_a_timeout() {
    assert_eq!(
        Timeout::new("x", Duration::ZERO).unwrap_err().to_string(),
        "invalid `timeout`: must be greater than zero"
    );
}
