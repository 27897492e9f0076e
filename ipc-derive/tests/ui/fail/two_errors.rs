use ipc_core::expose;

// Both mistakes are reported at once, and nothing else: the trait is still
// emitted, so the impl and the code using it do not add errors of their own.
#[expose]
pub trait Account {
    async fn deposit(&mut self, amount: u64);
    async fn owner(&self) -> &str;
    async fn balance(&self) -> u64;
}

struct Bank;

impl Account for Bank {
    async fn deposit(&mut self, _amount: u64) {}
    async fn owner(&self) -> &str {
        "me"
    }
    async fn balance(&self) -> u64 {
        0
    }
}

fn main() {
    let _ = Bank.balance();
}
