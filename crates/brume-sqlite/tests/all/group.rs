//! [`GroupCommit`]: batches, weights, close.

use std::ops::ControlFlow;
use std::sync::mpsc;

use brume_sqlite::{Closed, GroupCommit, Handler};
use tokio::sync::oneshot;

enum Req {
    /// Holds the thread until released.
    Gate {
        entered: oneshot::Sender<()>,
        release: mpsc::Receiver<()>,
    },
    Item {
        id: u32,
        weight: usize,
    },
    /// Answers with the batches of items seen so far.
    Report(oneshot::Sender<Vec<Vec<u32>>>),
    /// Ends the thread.
    Stop,
}

struct Recorder {
    batches: Vec<Vec<u32>>,
    dropped: Option<oneshot::Sender<()>>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(d) = self.dropped.take() {
            let _ = d.send(());
        }
    }
}

impl Handler for Recorder {
    type Request = Req;

    fn weight(&self, r: &Req) -> usize {
        match r {
            Req::Item { weight, .. } => *weight,
            _ => 1,
        }
    }

    fn handle(&mut self, batch: Vec<Req>) -> ControlFlow<()> {
        let mut items = Vec::new();
        let mut flow = ControlFlow::Continue(());
        let mut reports = Vec::new();
        for r in batch {
            match r {
                Req::Gate { entered, release } => {
                    let _ = entered.send(());
                    let _ = release.recv();
                }
                Req::Item { id, .. } => items.push(id),
                Req::Report(to) => reports.push(to),
                Req::Stop => flow = ControlFlow::Break(()),
            }
        }
        if !items.is_empty() {
            self.batches.push(items);
        }
        for to in reports {
            let _ = to.send(self.batches.clone());
        }
        flow
    }
}

fn start(max_weight: usize) -> (GroupCommit<Req>, oneshot::Receiver<()>) {
    let (dropped, ended) = oneshot::channel();
    let g = GroupCommit::start(
        "test-group",
        max_weight,
        Recorder {
            batches: Vec::new(),
            dropped: Some(dropped),
        },
    )
    .expect("start");
    (g, ended)
}

async fn gate(g: &GroupCommit<Req>) -> mpsc::Sender<()> {
    let (entered, wait) = oneshot::channel();
    let (release, rx) = mpsc::channel();
    g.send(Req::Gate {
        entered,
        release: rx,
    })
    .expect("send");
    wait.await.expect("entered");
    release
}

#[tokio::test]
async fn batches_keep_order_and_stop_at_the_weight() {
    let (g, _ended) = start(8);
    let release = gate(&g).await;
    let item = |id, weight| Req::Item { id, weight };
    for id in 1..=10 {
        g.send(item(id, 1)).expect("send");
    }
    g.send(item(11, 20)).expect("send");
    for id in 12..=14 {
        g.send(item(id, 1)).expect("send");
    }
    let (to, report) = oneshot::channel();
    g.send(Req::Report(to)).expect("send");
    release.send(()).expect("release");
    assert_eq!(
        report.await.expect("report"),
        [
            (1..=8).collect::<Vec<_>>(),
            vec![9, 10, 11],
            vec![12, 13, 14],
        ]
    );
}

#[tokio::test]
async fn close_refuses_sends_and_the_thread_drains_then_ends() {
    let (g, ended) = start(4);
    let clone = g.clone();
    let release = gate(&g).await;
    for id in 1..=6 {
        g.send(Req::Item { id, weight: 1 }).expect("send");
    }
    let (to, report) = oneshot::channel();
    g.send(Req::Report(to)).expect("send");
    g.close();
    assert_eq!(
        clone.send(Req::Item { id: 7, weight: 1 }).err(),
        Some(Closed)
    );
    release.send(()).expect("release");
    assert_eq!(
        report.await.expect("queued before close, answered"),
        [vec![1, 2, 3, 4], vec![5, 6]]
    );
    ended.await.expect("the thread ends once drained");
}

#[tokio::test]
async fn a_handler_break_ends_the_thread() {
    let (g, ended) = start(4);
    g.send(Req::Stop).expect("send");
    ended.await.expect("the thread ends");
    assert_eq!(g.send(Req::Item { id: 1, weight: 1 }).err(), Some(Closed));
}
