//! The broker's port: a second broker on a port in use is refused (the
//! shard listeners share it through SO_REUSEPORT, which must not let
//! another process join), and a restart can take the port back at once.

mod common;

use std::net::TcpStream;

use common::{config, start, Client};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use odradek_node::server::Server;

fn serves(c: &mut Client) {
    let r: ApiVersionsResponse = c.send(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0);
    assert!(!r.api_keys.is_empty());
}

#[test]
fn a_second_broker_on_the_same_port_is_refused_and_a_restart_is_not() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a = start(dir_a.path(), &[]);
    let port = a.local_addr.port().to_string();
    let listener = format!("127.0.0.1:{port}");
    let extra = [("listeners", listener.as_str())];
    let err = match Server::start(config(dir_b.path(), &extra), false) {
        Ok(_) => panic!("a second broker joined port {port}"),
        Err(e) => e,
    };
    assert!(err.contains("in use"), "{err}");
    // the first one still serves, and every connection reaches it
    for _ in 0..8 {
        serves(&mut Client::connect(a.local_addr));
    }
    // a restart gets the port back (the stopped broker's listener can
    // linger a few ms; connections that were served do not keep it out)
    let _ = TcpStream::connect(a.local_addr).unwrap();
    a.shutdown();
    let again = Server::start(config(dir_a.path(), &extra), false).expect("restart on the port");
    assert_eq!(again.local_addr.port().to_string(), port);
    serves(&mut Client::connect(again.local_addr));
    again.shutdown();
}
