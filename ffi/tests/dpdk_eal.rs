//! DPDK integration test (`harness = false`): EAL initialises once per
//! process, so every case runs in sequence in this one process.
//!
//! Run with `cargo test -p ironsa-ffi --features dpdk`. Without the feature
//! the test prints why it is skipped and succeeds.

#[cfg(not(feature = "dpdk"))]
fn main() {
    println!("dpdk_eal: skipped: ironsa-ffi built without the `dpdk` feature");
}

#[cfg(feature = "dpdk")]
fn main() {
    real::run();
}

#[cfg(feature = "dpdk")]
mod real {
    use ffi::*;

    type CaseResult = std::result::Result<(), String>;
    /// A named test case.
    type Case = (&'static str, fn(&Ctx) -> CaseResult);

    /// Turn any error into the case's failure message.
    fn e<E: std::fmt::Display>(err: E) -> String {
        err.to_string()
    }

    fn ensure(cond: bool, msg: impl Into<String>) -> CaseResult {
        if cond { Ok(()) } else { Err(msg.into()) }
    }

    const EAL_ARGS: &[&str] = &[
        "-l",
        "0",
        "--no-huge",
        "-m",
        "256",
        "--no-shconf",
        "--no-pci",
        "--log-level=lib.eal:error",
        "--vdev=net_ring0",
        "--vdev=net_null0",
        "--vdev=crypto_aesni_gcm0",
        "--vdev=crypto_openssl0",
        // Has an rte_security context (DOCSIS): exercises capability parsing.
        "--vdev=crypto_aesni_mb0",
    ];

    /// GCM specification (McGrew & Viega), test case 16: AES-256, 96-bit IV, AAD.
    mod gcm_tc16 {
        pub const KEY: &str = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
        pub const IV: &str = "cafebabefacedbaddecaf888";
        pub const AAD: &str = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
        pub const PT: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                              1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39";
        pub const CT: &str = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                              8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662";
        pub const TAG: &str = "76fc6ece0f4e1768cddf8853bb2d551b";
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test vector hex"))
            .collect()
    }

    struct Ctx {
        eal: Eal,
        pool: Mempool,
    }

    pub fn run() {
        let start = std::time::Instant::now();
        let eal = match Eal::init(EAL_ARGS) {
            Ok(eal) => eal,
            Err(err) => {
                println!("FAIL eal_init: {err}");
                println!("0 passed, 1 failed");
                std::process::exit(1);
            }
        };
        println!("ok   eal_init ({} ms)", start.elapsed().as_millis());
        let pool = match Mempool::new(&eal, "test_pool", 2047, 0, DEFAULT_DATA_ROOM, -1) {
            Ok(pool) => pool,
            Err(err) => {
                println!("FAIL mempool_create: {err}");
                println!("1 passed, 1 failed");
                std::process::exit(1);
            }
        };
        let ctx = Ctx { eal, pool };

        let cases: &[Case] = &[
            ("eal_init_twice_errors", eal_init_twice_errors),
            ("lcore_info", lcore_info),
            ("mbuf_edit", mbuf_edit),
            ("mbuf_bounds_errors", mbuf_bounds_errors),
            ("lookup_errors", lookup_errors),
            ("ring_roundtrip", ring_roundtrip),
            ("net_ring_loopback_and_stats", net_ring_loopback_and_stats),
            ("net_null_rx_tx", net_null_rx_tx),
            ("aes256gcm_kat_aesni_gcm", |c| {
                aes256gcm_kat(c, "crypto_aesni_gcm0", "crypto_aesni_gcm")
            }),
            ("aes256gcm_kat_openssl", |c| {
                aes256gcm_kat(c, "crypto_openssl0", "crypto_openssl")
            }),
            ("security_probe_net_ring", security_probe_net_ring),
            ("probe_report", probe_report),
        ];
        let (mut passed, mut failed) = (1usize, 0usize);
        for (name, case) in cases {
            let t = std::time::Instant::now();
            match case(&ctx) {
                Ok(()) => {
                    passed += 1;
                    println!("ok   {name} ({} ms)", t.elapsed().as_millis());
                }
                Err(msg) => {
                    failed += 1;
                    println!("FAIL {name}: {msg}");
                }
            }
        }
        println!("{passed} passed, {failed} failed");
        if failed != 0 {
            std::process::exit(1);
        }
    }

    fn eal_init_twice_errors(_: &Ctx) -> CaseResult {
        match Eal::init(EAL_ARGS) {
            Err(Error::AlreadyInitialized) => Ok(()),
            Err(other) => Err(format!("wrong error: {other}")),
            Ok(_) => Err("second Eal::init succeeded".into()),
        }
    }

    fn lcore_info(c: &Ctx) -> CaseResult {
        ensure(c.eal.lcore_count() == 1, format!("lcore_count {}", c.eal.lcore_count()))?;
        ensure(c.eal.main_lcore() == 0, "main lcore is not 0")?;
        ensure(
            c.eal.current_lcore() == Some(0),
            format!("current {:?}", c.eal.current_lcore()),
        )?;
        let lcores = c.eal.lcores();
        ensure(lcores.len() == 1 && lcores[0].id == 0, format!("lcores {lcores:?}"))?;
        // A non-EAL thread has no lcore id.
        let eal = c.eal;
        let other = std::thread::spawn(move || eal.current_lcore())
            .join()
            .map_err(|_| "thread panicked".to_string())?;
        ensure(other.is_none(), format!("non-EAL thread has lcore {other:?}"))?;
        // A registered thread gets a free lcore id (not an enabled EAL lcore)
        // until its guard drops; the id is then free again. The main lcore
        // keeps its id and stays registered.
        let ids = std::thread::spawn(
            move || -> std::result::Result<(u32, Option<u32>, Option<u32>), String> {
                let r = eal.register_thread().map_err(e)?;
                let (id, seen) = (r.lcore(), eal.current_lcore());
                drop(r);
                Ok((id, seen, eal.current_lcore()))
            },
        )
        .join()
        .map_err(|_| "thread panicked".to_string())??;
        ensure(
            ids.0 != 0 && ids.1 == Some(ids.0) && ids.2.is_none(),
            format!("registered thread: lcore, seen, after drop = {ids:?}"),
        )?;
        let again = std::thread::spawn(move || eal.register_thread().map(|r| r.lcore()))
            .join()
            .map_err(|_| "thread panicked".to_string())?
            .map_err(e)?;
        ensure(again == ids.0, format!("released lcore {} not reused ({again})", ids.0))?;
        let main = c.eal.register_thread().map_err(e)?;
        ensure(main.lcore() == 0, format!("main lcore registered as {}", main.lcore()))?;
        drop(main);
        ensure(
            c.eal.current_lcore() == Some(0),
            "the main lcore lost its id to a registration guard",
        )
    }

    fn mbuf_edit(c: &Ctx) -> CaseResult {
        let mut m = c.pool.alloc().map_err(e)?;
        let headroom = m.headroom();
        let tailroom = m.tailroom();
        ensure(m.data_len() == 0 && m.pkt_len() == 0, "fresh mbuf not empty")?;
        ensure(headroom == 128, format!("headroom {headroom}"))?;
        m.extend_from_slice(b"payload").map_err(e)?;
        m.prepend(4).map_err(e)?.copy_from_slice(b"HDR:");
        ensure(m.data() == b"HDR:payload", format!("data {:?}", m.data()))?;
        ensure(m.headroom() == headroom - 4, "headroom after prepend")?;
        ensure(m.tailroom() == tailroom - 7, "tailroom after append")?;
        m.adj(4).map_err(e)?;
        m.trim(3).map_err(e)?;
        ensure(m.data() == b"payl", format!("data after adj/trim {:?}", m.data()))?;
        m.data_mut()[0] = b'P';
        ensure(m.data() == b"Payl" && m.pkt_len() == 4 && m.nb_segs() == 1, "data_mut")?;
        let in_use = c.pool.in_use();
        drop(m);
        ensure(c.pool.in_use() + 1 == in_use, "drop did not return the mbuf")?;
        let mut bulk = Vec::new();
        c.pool.alloc_bulk(16, &mut bulk).map_err(e)?;
        ensure(bulk.len() == 16 && c.pool.in_use() == in_use - 1 + 16, "alloc_bulk")?;
        bulk.clear();
        ensure(c.pool.in_use() == in_use - 1, "bulk drop")?;
        Ok(())
    }

    fn mbuf_bounds_errors(c: &Ctx) -> CaseResult {
        let mut m = c.pool.alloc().map_err(e)?;
        ensure(m.prepend(m.headroom() + 1).is_err(), "prepend past headroom accepted")?;
        ensure(m.append(m.tailroom() + 1).is_err(), "append past tailroom accepted")?;
        ensure(m.adj(1).is_err(), "adj on empty mbuf accepted")?;
        ensure(m.trim(1).is_err(), "trim on empty mbuf accepted")?;
        ensure(m.data_len() == 0, "failed edits changed the mbuf")?;
        ensure(
            matches!(
                Mempool::new(&c.eal, "zero", 0, 0, DEFAULT_DATA_ROOM, -1),
                Err(Error::InvalidArgument(_))
            ),
            "zero-sized pool accepted",
        )?;
        match Mempool::new(&c.eal, "test_pool", 64, 0, DEFAULT_DATA_ROOM, -1) {
            Err(Error::Dpdk { code, message, .. }) => ensure(
                code != 0 && !message.is_empty(),
                format!("duplicate pool name error: {code} {message}"),
            ),
            other => Err(format!("duplicate pool name: {other:?}")),
        }
    }

    fn lookup_errors(c: &Ctx) -> CaseResult {
        ensure(
            matches!(EthPort::by_name(&c.eal, "net_nope9"), Err(Error::NotFound(_))),
            "unknown port found",
        )?;
        ensure(
            matches!(EthPort::by_id(&c.eal, 31), Err(Error::NotFound(_))),
            "port 31 found",
        )?;
        ensure(
            matches!(CryptoDev::by_name(&c.eal, "crypto_nope0"), Err(Error::NotFound(_))),
            "unknown cryptodev found",
        )?;
        ensure(
            matches!(Eal::init(&["bad\0arg"]), Err(Error::InvalidArgument(_))),
            "NUL in EAL argument accepted",
        )
    }

    fn ring_roundtrip(c: &Ctx) -> CaseResult {
        let ring = Ring::new(&c.eal, "test_ring", 8, -1).map_err(e)?;
        ensure(ring.capacity() == 8 && ring.is_empty(), "new ring")?;
        let mut pkts = Vec::new();
        for i in 0..10u8 {
            let mut m = c.pool.alloc().map_err(e)?;
            m.extend_from_slice(&[i; 3]).map_err(e)?;
            pkts.push(m);
        }
        let n = ring.enqueue_burst(&mut pkts);
        ensure(n == 8 && pkts.len() == 2 && ring.len() == 8, format!("enqueued {n}"))?;
        let mut out = Vec::new();
        let got = ring.dequeue_burst(&mut out, 32);
        ensure(got == 8 && ring.is_empty(), format!("dequeued {got}"))?;
        for (i, m) in out.iter().enumerate() {
            ensure(m.data() == [i as u8; 3], format!("ring item {i}: {:?}", m.data()))?;
        }
        // Dropping a non-empty ring frees what it holds.
        let before = c.pool.in_use();
        ring.enqueue_burst(&mut pkts);
        drop(ring);
        ensure(c.pool.in_use() == before - 2, "ring drop leaked mbufs")
    }

    fn net_ring_loopback_and_stats(c: &Ctx) -> CaseResult {
        let port = EthPort::by_name(&c.eal, "net_ring0").map_err(e)?;
        let info = port.info().map_err(e)?;
        ensure(info.driver == "net_ring", format!("driver {:?}", info.driver))?;
        ensure(info.name == "net_ring0", format!("name {:?}", info.name))?;
        let config = PortConfig {
            rx_descriptors: 256,
            tx_descriptors: 256,
            ..PortConfig::default()
        };
        let mut queues = port.configure(&config, &c.pool).map_err(e)?;
        port.start().map_err(e)?;
        let _ = port.promiscuous_enable();
        port.reset_stats().map_err(e)?;

        const COUNT: usize = 32;
        let payload = |i: usize| -> Vec<u8> { (0..60 + i).map(|b| (b * 7 + i) as u8).collect() };
        let mut burst = Vec::new();
        for i in 0..COUNT {
            let mut m = c.pool.alloc().map_err(e)?;
            m.extend_from_slice(&payload(i)).map_err(e)?;
            burst.push(m);
        }
        let tx = &mut queues.tx[0];
        let sent = tx.tx_burst(&mut burst);
        ensure(sent == COUNT && burst.is_empty(), format!("sent {sent}/{COUNT}"))?;

        let mut got = Vec::new();
        for _ in 0..100 {
            if got.len() >= COUNT {
                break;
            }
            queues.rx[0].rx_burst(&mut got, MAX_BURST);
        }
        ensure(got.len() == COUNT, format!("received {}/{COUNT}", got.len()))?;
        for (i, m) in got.iter().enumerate() {
            ensure(m.data() == payload(i).as_slice(), format!("packet {i} differs"))?;
            ensure(m.pkt_len() as usize == payload(i).len(), format!("packet {i} length"))?;
        }
        // net_ring counts packets only (ibytes/obytes stay 0).
        let stats = port.stats().map_err(e)?;
        ensure(
            stats.opackets == COUNT as u64 && stats.ipackets == COUNT as u64,
            format!("stats {stats:?}"),
        )?;
        ensure(
            stats.q_opackets[0] == COUNT as u64 && stats.q_ipackets[0] == COUNT as u64,
            format!("queue stats {:?} {:?}", stats.q_opackets[0], stats.q_ipackets[0]),
        )?;
        ensure(stats.ierrors == 0 && stats.oerrors == 0, "errors counted")?;
        drop(got);
        port.stop().map_err(e)?;
        ensure(
            matches!(port.configure(&config, &c.pool), Err(Error::InvalidArgument(_))),
            "second configure of a port accepted",
        )?;
        Ok(())
    }

    fn net_null_rx_tx(c: &Ctx) -> CaseResult {
        let port = EthPort::by_name(&c.eal, "net_null0").map_err(e)?;
        let info = port.info().map_err(e)?;
        ensure(info.driver == "net_null", format!("driver {:?}", info.driver))?;
        ensure(info.rss_offloads != 0, "net_null reports no RSS hash functions")?;
        // Two queues with RSS: exercises the RSS configuration path.
        let config = PortConfig {
            rx_queues: 2,
            tx_queues: 2,
            rx_descriptors: 128,
            tx_descriptors: 128,
            rss: true,
            ..PortConfig::default()
        };
        let mut queues = port.configure(&config, &c.pool).map_err(e)?;
        ensure(queues.rx.len() == 2 && queues.tx.len() == 2, "queue handles")?;
        port.start().map_err(e)?;
        port.reset_stats().map_err(e)?;
        let in_use = c.pool.in_use();
        let mut got = Vec::new();
        let n = queues.rx[0].rx_burst(&mut got, 16) + queues.rx[1].rx_burst(&mut got, 16);
        ensure(n == 32 && got.len() == 32, format!("net_null rx gave {n}"))?;
        ensure(got.iter().all(|m| m.pkt_len() > 0), "empty packet from net_null")?;
        let mut second = got.split_off(16);
        let sent = queues.tx[0].tx_burst(&mut got) + queues.tx[1].tx_burst(&mut second);
        ensure(
            sent == 32 && got.is_empty() && second.is_empty(),
            format!("net_null tx took {sent}"),
        )?;
        ensure(c.pool.in_use() == in_use, "net_null tx did not free the mbufs")?;
        let stats = port.stats().map_err(e)?;
        ensure(
            stats.ipackets == 32 && stats.opackets == 32,
            format!("net_null stats {stats:?}"),
        )?;
        ensure(
            stats.q_ipackets[..2] == [16, 16] && stats.q_opackets[..2] == [16, 16],
            format!(
                "net_null queue stats {:?} {:?}",
                &stats.q_ipackets[..2],
                &stats.q_opackets[..2]
            ),
        )?;
        port.stop().map_err(e)
    }

    fn aes256gcm_kat(c: &Ctx, name: &str, driver: &str) -> CaseResult {
        let dev = CryptoDev::by_name(&c.eal, name).map_err(e)?;
        let info = dev.info();
        ensure(info.driver == driver, format!("driver {:?}", info.driver))?;
        let by_driver = CryptoDev::by_driver(&c.eal, driver).map_err(e)?;
        ensure(by_driver.contains(&dev), format!("{name} not listed under {driver}"))?;
        let caps = dev.aes_gcm_caps().ok_or("no AES-GCM capability")?;
        ensure(
            caps.key_size.contains(16) && caps.key_size.contains(32),
            format!("key sizes {:?}", caps.key_size),
        )?;
        ensure(
            caps.iv_size.contains(12) && caps.digest_size.contains(16),
            "IV/ICV sizes",
        )?;

        let sessions = SessionPool::new(&c.eal, &format!("sess_{name}"), 16, &[dev], -1).map_err(e)?;
        let ops = CryptoOpPool::new(&c.eal, &format!("ops_{name}"), 64, 0, -1).map_err(e)?;
        // Sessions on a device that is not started are refused (PMDs would
        // dereference per-device state that configuration sets up).
        ensure(!dev.is_started(), format!("{name} started before configuration"))?;
        match SymSession::aes_gcm(&dev, &sessions, AeadDirection::Encrypt, &[1; 16], 12, 8, 16) {
            Err(ffi::Error::InvalidArgument(m)) if m.contains("start the device") => {}
            other => return Err(format!("session on an unstarted device: {:?}", other.map(|_| ()))),
        }
        let mut qps = dev.configure_and_start(1, 64, &sessions).map_err(e)?;
        ensure(dev.is_started(), "is_started after configure_and_start")?;
        let qp = &mut qps[0];

        let (key, iv, aad) = (hex(gcm_tc16::KEY), hex(gcm_tc16::IV), hex(gcm_tc16::AAD));
        let (pt, ct, tag) = (hex(gcm_tc16::PT), hex(gcm_tc16::CT), hex(gcm_tc16::TAG));
        let aad_len = aad.len() as u16;
        let len = pt.len() as u32;

        // Encrypt: mbuf = plaintext || room for the ICV.
        let enc = SymSession::aes_gcm(&dev, &sessions, AeadDirection::Encrypt, &key, 12, aad_len, 16).map_err(e)?;
        let mut m = c.pool.alloc().map_err(e)?;
        m.extend_from_slice(&pt).map_err(e)?;
        m.append(16).map_err(e)?.fill(0);
        let mut op = ops.alloc().map_err(e)?;
        op.set_aead(
            &enc,
            m,
            &AeadParams {
                data_offset: 0,
                data_len: len,
                digest_offset: len,
                iv: &iv,
                aad: &aad,
            },
        )
        .map_err(e)?;
        let mut out = process(qp, op)?;
        ensure(
            out.status() == OpStatus::Success,
            format!("encrypt status {:?}", out.status()),
        )?;
        let data = out.mbuf_data().ok_or("no mbuf after encrypt")?;
        ensure(
            &data[..pt.len()] == ct.as_slice(),
            format!("ciphertext differs on {name}"),
        )?;
        ensure(&data[pt.len()..] == tag.as_slice(), format!("tag differs on {name}"))?;

        // Decrypt the result back; then a tampered copy must fail the ICV check.
        let dec = SymSession::aes_gcm(&dev, &sessions, AeadDirection::Decrypt, &key, 12, aad_len, 16).map_err(e)?;
        let sealed = out.take_mbuf().ok_or("take_mbuf")?;
        ensure(out.mbuf_data().is_none(), "op still has an mbuf after take_mbuf")?;
        let mut tampered = c.pool.alloc().map_err(e)?;
        tampered.extend_from_slice(sealed.data()).map_err(e)?;
        tampered.data_mut()[5] ^= 1;
        drop(out);
        let mut op = ops.alloc().map_err(e)?;
        op.set_aead(
            &dec,
            sealed,
            &AeadParams {
                data_offset: 0,
                data_len: len,
                digest_offset: len,
                iv: &iv,
                aad: &aad,
            },
        )
        .map_err(e)?;
        let out = process(qp, op)?;
        ensure(
            out.status() == OpStatus::Success,
            format!("decrypt status {:?}", out.status()),
        )?;
        ensure(
            &out.mbuf_data().ok_or("no mbuf after decrypt")?[..pt.len()] == pt.as_slice(),
            "decrypted plaintext differs",
        )?;
        let mut op = ops.alloc().map_err(e)?;
        op.set_aead(
            &dec,
            tampered,
            &AeadParams {
                data_offset: 0,
                data_len: len,
                digest_offset: len,
                iv: &iv,
                aad: &aad,
            },
        )
        .map_err(e)?;
        let out2 = process(qp, op)?;
        ensure(
            out2.status() == OpStatus::AuthFailed,
            format!("tampered decrypt status {:?}", out2.status()),
        )?;
        drop((out, out2));

        // Argument checks happen before DPDK sees anything.
        let mut op = ops.alloc().map_err(e)?;
        let small = c.pool.alloc().map_err(e)?;
        ensure(
            op.set_aead(
                &enc,
                small,
                &AeadParams {
                    data_offset: 0,
                    data_len: 10,
                    digest_offset: 10,
                    iv: &iv,
                    aad: &aad,
                },
            )
            .is_err(),
            "out-of-range data accepted",
        )?;
        ensure(
            op.set_aead(
                &enc,
                c.pool.alloc().map_err(e)?,
                &AeadParams {
                    data_offset: 0,
                    data_len: 0,
                    digest_offset: 0,
                    iv: &iv[..8],
                    aad: &aad,
                },
            )
            .is_err(),
            "wrong IV length accepted",
        )?;
        ensure(
            SymSession::aes_gcm(&dev, &sessions, AeadDirection::Encrypt, &key[..20], 12, aad_len, 16).is_err(),
            "20-byte key accepted",
        )?;
        // Ops that are not ready are not handed to the device.
        let mut batch = vec![op];
        ensure(
            qp.enqueue_burst(&mut batch) == 0 && batch.len() == 1,
            "unprepared op enqueued",
        )?;
        let mut op = batch.pop().ok_or("op vanished")?;
        let mut m = c.pool.alloc().map_err(e)?;
        m.extend_from_slice(&pt).map_err(e)?;
        m.append(16).map_err(e)?;
        let p = AeadParams {
            data_offset: 0,
            data_len: len,
            digest_offset: len,
            iv: &iv,
            aad: &aad,
        };
        op.set_aead(&enc, m, &p).map_err(e)?;
        drop(op.take_mbuf());
        let mut batch = vec![op];
        ensure(
            qp.enqueue_burst(&mut batch) == 0 && batch.len() == 1,
            "op without mbuf enqueued",
        )?;
        ensure(
            matches!(
                dev.configure_and_start(1, 64, &sessions),
                Err(Error::InvalidArgument(_))
            ),
            "second configure of a cryptodev accepted",
        )?;
        drop((batch, enc, dec));
        let in_use = c.pool.in_use();
        ensure(in_use == 0, format!("{in_use} mbufs leaked by crypto ops"))?;
        dev.stop();
        Ok(())
    }

    /// Enqueue one op and poll until it comes back.
    fn process(qp: &mut CryptoQueuePair, op: CryptoOp) -> std::result::Result<CryptoOp, String> {
        let mut batch = vec![op];
        let n = qp.enqueue_burst(&mut batch);
        ensure(n == 1 && batch.is_empty(), format!("enqueued {n}"))?;
        let mut done = Vec::new();
        for _ in 0..100_000 {
            if qp.dequeue_burst(&mut done, 4) > 0 {
                break;
            }
        }
        ensure(done.len() == 1, format!("dequeued {}", done.len()))?;
        done.pop().ok_or_else(|| "no op".to_string())
    }

    fn security_probe_net_ring(c: &Ctx) -> CaseResult {
        let port = EthPort::by_name(&c.eal, "net_ring0").map_err(e)?;
        let sec = port.security();
        ensure(sec == SecuritySupport::None, format!("net_ring0 security {sec:?}"))?;
        ensure(!sec.has_inline_ipsec(), "inline ipsec reported")?;
        let info = port.info().map_err(e)?;
        ensure(
            !info.rx_inline_security && !info.tx_inline_security,
            "security offload flags on net_ring0",
        )
    }

    fn probe_report(c: &Ctx) -> CaseResult {
        let report = probe(&c.eal).map_err(e)?;
        print!("{report}");
        ensure(report.lcores == 1, "lcores")?;
        let names: Vec<&str> = report.ports.iter().map(|p| p.name.as_str()).collect();
        ensure(names == ["net_ring0", "net_null0"], format!("ports {names:?}"))?;
        ensure(
            report.ports.iter().all(|p| p.security == SecuritySupport::None),
            "vdev with security",
        )?;
        let gcm: Vec<(&str, bool)> = report
            .crypto
            .iter()
            .map(|d| (d.driver.as_str(), d.aes_gcm.is_some()))
            .collect();
        ensure(
            gcm == [
                ("crypto_aesni_gcm", true),
                ("crypto_openssl", true),
                ("crypto_aesni_mb", true),
            ],
            format!("crypto {gcm:?}"),
        )?;
        let mb = &report.crypto[2];
        match &mb.security {
            SecuritySupport::Capabilities(caps) => ensure(
                !caps.is_empty() && caps.iter().all(|cap| !cap.is_ipsec()) && !mb.security.has_inline_ipsec(),
                format!("aesni_mb security {caps:?}"),
            ),
            SecuritySupport::None => Err("aesni_mb has no security context".into()),
        }
    }
}
