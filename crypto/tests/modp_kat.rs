//! MODP (RFC 3526) known answers: the primes are derived independently from
//! their definition (p = 2^n - 2^(n-64) - 1 + 2^64 * (floor(2^(n-130) * pi) + k), RFC 3526)
//! with python3 + mpmath, and g^x, peer^x computed with python3 `pow(g, x, p)`.

use control::crypto::{CryptoError, KeGroup, KeyExchange};
use ffi::modp::{ModpGroup, ModpPrime};
use ironsa_crypto::AwsLcProvider;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

const M2048_FULLPRIME: &str = "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f14374fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7edee386bfb5a899fa5ae9f24117c4b1fe649286651ece45b3dc2007cb8a163bf0598da48361c55d39a69163fa8fd24cf5f83655d23dca3ad961c62f356208552bb9ed529077096966d670c354e4abc9804f1746c08ca18217c32905e462e36ce3be39e772c180e86039b2783a2ec07a28fb5c55df06f4c52c9de2bcbf6955817183995497cea956ae515d2261898fa051015728e5a8aacaa68ffffffffffffffff";
const M2048_X: &str = "d8df93d3b999799429836410202343e7ccf0ab6887bf45ad4aa53ce82dab1d4e";
const M2048_GX: &str = "7a8591c1eaf19b4feef2d06f3ab70e1d29d505811dfd3bf2008ea835f779d954ed456ecb7a019bdffc0891d01e08b2547eb5a7be7294a52dfa46557f6caa65b79217435b3f4348adee36a83b0c0a155415276c23f84d4e67dd7353880176fbb8e322fb6df4bcfa723894f1057d34292b9df2ab47980f206d8ba86a2d98ea7b43c38cbde19267457cda6ba43aae6da4739d842cd8504aed9a2bb71dcb285c447960b8f5c169dfc74740c61f99c73a3aebbecb991982d8a9a1ad961425a37871ccc329e5e2ce3bb4637b250127b7a6070b7a34eaad2666f8671c2c9553d058820d5b5ab64f092d081ce8595b86e79e6d8bf8aeb825680fcabc0a109b4bda4a8a6a";
const M2048_PEER: &str = "9d257ad906c91e15d497d680d0b18d60657e2f196e59fc49697fe20f84aef5b8123973ed1871aa6051d6281545936d73635497c3e52cbfe0bb6c28c8a11219a3393d6424e10bef0d6b23a31a444341cb4fdf5aa5575ff5d583e1efbb526d2793a6742685105cef44bf20b43c70c5e217196c0ef12db45c12b7deb53b7463c729f91a58b18f658ed77397bc1ece93ac803ec8981b9a36c0104088a2229b99a3066319c01cfeb96a9b81c746b3b15e825477b5094b5b54ed9105efe9ce34569b910606eb8ec0ca9b2c565ee7f03d1dc5d10bb2965636c0c37e3e424658fe904ca20bbefb557ea2a682b3fcd6ba57bd09c97f3b22964cb75c83ec7d8978f2dff89b";
const M2048_SHARED: &str = "87971ea5ac859de2f4992206db223a4f7fc19681448d2ba98aed90de8cd730dd5e5f07841ca61724518a1fb0016a352ba3fe4cd1823e168681f14ab07b648a0e7121b46314a46fa2f08d362d32cd1538001c81665788cec46d68a8b17029caee8d6c44023063334170c80a72cb0bbedd96868562c44fdd16f74c5a4c67986b092185cff8008de814fd77561573e5e8d119eecc62ea43a632dffcde56e1aa95bb43c441eb849b330c47a89acb02e0199ddf4d2e014e54e1267a5f7f7a85cda92c5c6a2bdff8f6787edee591f6bc9a1c967b1fda78f8dfefcdc3086424faa3f9b65be13f340af216f4b3d6bfe4a9370b428bfc756fd48b5290409ec151e641c781";

#[test]
fn modp2048_known_answer() {
    let group = ModpGroup::get(ModpPrime::Modp2048).unwrap();
    assert_eq!(
        group.prime().unwrap(),
        h(M2048_FULLPRIME),
        "aws-lc prime differs from RFC 3526"
    );
    let ke = AwsLcProvider::key_exchange_from_private(KeGroup::Modp2048, &h(M2048_X)).unwrap();
    assert_eq!(ke.public_value(), &h(M2048_GX)[..]);
    let shared = ke.finish(&h(M2048_PEER)).unwrap();
    assert_eq!(&shared[..], &h(M2048_SHARED)[..]);
}

const M3072_FULLPRIME: &str = "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f14374fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7edee386bfb5a899fa5ae9f24117c4b1fe649286651ece45b3dc2007cb8a163bf0598da48361c55d39a69163fa8fd24cf5f83655d23dca3ad961c62f356208552bb9ed529077096966d670c354e4abc9804f1746c08ca18217c32905e462e36ce3be39e772c180e86039b2783a2ec07a28fb5c55df06f4c52c9de2bcbf6955817183995497cea956ae515d2261898fa051015728e5a8aaac42dad33170d04507a33a85521abdf1cba64ecfb850458dbef0a8aea71575d060c7db3970f85a6e1e4c7abf5ae8cdb0933d71e8c94e04a25619dcee3d2261ad2ee6bf12ffa06d98a0864d87602733ec86a64521f2b18177b200cbbe117577a615d6c770988c0bad946e208e24fa074e5ab3143db5bfce0fd108e4b82d120a93ad2caffffffffffffffff";
const M3072_X: &str = "e32c502d861e9b9f3b99b1847ccaa3f9f844cc90d2972f4134f73ffe3b5d17a5e32c502d861e9b9f";
const M3072_GX: &str = "4dfbdffae90d24f8810e2c01326bb574785421c8cb2370f954580faeee32a766888129f17457bcbceb64036c4e04396024c04e57783a71468b9a78cde60869adcb82455ae66c22871eb0b28c45f49d9dac56c2f35044fa2aac1333e33d41d9816312fff73b0fcda173aef95ccabb2ab6b53b2fcb1dad64f7b24ce81a87bb547a621436646f4388cb5ab4ede00881d3f76108a9ef08b8493b2e2ee2c0b91187ce0398efb5a39669f82a6e944bd82adff7ed4d685e5141f050f7bd66dfcf2758fcce6c8d99db904c942d585e961a2e602287a1a2ab4dbcd87906a12e674bb8fd72fdf62f9d2fd72c8ee1f0a2a16c65048852fa036011b80c4350bc47b976a48d11f077bfab0afa65af6a9564c8e51829b562fbcc1f96fcd1972bab708965ac5d2566c658b54c1dea147b22766ea9a80da37478d865a088ff443e0fde247fb074ba656ecaf90bfce3212bad876a51bf30a21d0b9069acd9324b481f65cd87292d22307ced93249265888ea89257b5317c940ef1631c5718f1ed860c8aaffb8e8485";
const M3072_PEER: &str = "08b95fd8453ae4d5730ed24a8d34820340ba5eaf797ee30b7cc3a86801342d040247e18cf206e027b27f9813670c71169aa2f868286330da9d05dceda63484b046f1e13925f7d0b50d7307552ab3c445ae9e69db0f12bc9c95ece147492847c7621dd4b4ab18ddce2bd036ba7210c8aaf69452c2b00f75e8b25a2fc3bc82639eee7e7d101e3d89474dd50623bce9080506840c165901f7e2052045d10a8ab1a7eaf6cc759396b92fe0f6046d4f9d91755d359ef88d6841a389c4a1d5afa13cc1b09c92294798a4a1df5046fd7d8d2667f297af89a5524e0ff70c5096dc74f46b42dac0b2cef58b18f0cbaca3aed6c7b774bcfd5c7c2ff43cb1f956599b4521ee970487ade66bd98cc652336b9720fd3d2416090ac2f67983a407fbf188df4443bc3362968bfd81e70d2624da0de46521de5d88ec80e499c7b9442127407e0475bcffdb37cc31bbca601ae471efd084ed380ee9b9f7980d0d1ee48b4a343e40ac08627f9edb88af192a09ae9dd3f6c46d2d3236544f4cc2b8084cc121c0ab910e";
const M3072_SHARED: &str = "ba53a15411d44aadbdb7c19cc0f7883d7e7c154da6471252d5c0b3d33c15dba5eed88282f5e906f8ec9164f24f7fa767ab01752e3d2d7f82d216a4ec3e16c09ab5e0d50a3f73b3f6e7f3ea41c4cf4c93c40229f3d39e5883205292e4102b56d1fa6496eec6ee5a6a483c3a9c4f44b3111062d7bdd98a44d809c89f7c9fbab7f511825076eb434f95f5fec8d4f8b4e23266f0d5bc9f4c2b85d9620f7f657c03d2c85568c2899dc4d0b2b92f8f4affe6219e1199a40b01538823c5106be7fa4273c87e21ee0e3f3e4c9d97def506e99ff063b3cde3803eeddff240fd01d6b575c0c9348908c444e8a1cab706039ac2f02621db4574c514727c3b10d0efc85949da5e77a1a2467e874b00bcc3ea1de2bf3ae0e066becc6dcf283f7dc463bbeb8172dc681bbd3f8ca325cfda41b49dfe9e0142b43be99be65c8fcd48f6238f74c10abc002ca94749f4071c1a4e98879a4a6c3b21c91e594b8459911cc26320b163f73eb961d5ec03a450ba5bc71ca56309e6c750ab488a1d47d01d654d30ec33cf51";

#[test]
fn modp3072_known_answer() {
    let group = ModpGroup::get(ModpPrime::Modp3072).unwrap();
    assert_eq!(
        group.prime().unwrap(),
        h(M3072_FULLPRIME),
        "aws-lc prime differs from RFC 3526"
    );
    let ke = AwsLcProvider::key_exchange_from_private(KeGroup::Modp3072, &h(M3072_X)).unwrap();
    assert_eq!(ke.public_value(), &h(M3072_GX)[..]);
    let shared = ke.finish(&h(M3072_PEER)).unwrap();
    assert_eq!(&shared[..], &h(M3072_SHARED)[..]);
}

const M4096_FULLPRIME: &str = "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f14374fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7edee386bfb5a899fa5ae9f24117c4b1fe649286651ece45b3dc2007cb8a163bf0598da48361c55d39a69163fa8fd24cf5f83655d23dca3ad961c62f356208552bb9ed529077096966d670c354e4abc9804f1746c08ca18217c32905e462e36ce3be39e772c180e86039b2783a2ec07a28fb5c55df06f4c52c9de2bcbf6955817183995497cea956ae515d2261898fa051015728e5a8aaac42dad33170d04507a33a85521abdf1cba64ecfb850458dbef0a8aea71575d060c7db3970f85a6e1e4c7abf5ae8cdb0933d71e8c94e04a25619dcee3d2261ad2ee6bf12ffa06d98a0864d87602733ec86a64521f2b18177b200cbbe117577a615d6c770988c0bad946e208e24fa074e5ab3143db5bfce0fd108e4b82d120a92108011a723c12a787e6d788719a10bdba5b2699c327186af4e23c1a946834b6150bda2583e9ca2ad44ce8dbbbc2db04de8ef92e8efc141fbecaa6287c59474e6bc05d99b2964fa090c3a2233ba186515be7ed1f612970cee2d7afb81bdd762170481cd0069127d5b05aa993b4ea988d8fddc186ffb7dc90a6c08f4df435c934063199ffffffffffffffff";
const M4096_X: &str =
    "f7835e01a1e5b1de103a53aebf45919b8cf63dc0fd51074018cfa9cd7bdea406f7835e01a1e5b1de103a53aebf45919b";
const M4096_GX: &str = "085bbd3196d1d89fbb626711e9aeeb5ba7026be6c5d0698c5dcdb3d15eb68024fa013b8c8ee29d595b918ae357d740b1b34f0cf4295957246ee5f18397954179b8ccb8ebfd5ade033612dfe70f66953adfabb15d247748311b2c2464eee50ee0129e331eeea4a180a9f862350c6b70bd46e00531b8c05d38b35e7aec9a266136fc3c81e93993b43cf20cb5b9dddf9ba7a90d848be62534005d5eb30584f4ff94efed648a77136cfd0971f7828b6c8ab1208174ada8c1593b7f366fdf68d38096043f47f01bac5f683fd6df52a7fd1d1c34bbd9338c63f4cc778d16521a2299ade22e4c35e8a599f224e4dada0f8cd3de58f42d7a9cf12166a6ba50543a61b99155239b891f489c367de9348861bf3de6afaec07acace17e0aa5c3ed7456a56c08e56a47ee08c33ec536d49eea1c744da4e26e9f8357a83c9e94f4b28f8adf4b4258e44a2bd901b4bdaa537f42a86df916250f2e8e1aa87f8db4bfc67a4f5dd7628d29e6cc948ed376b4c173820b9d78f657b843a69111441b95a98c9c2316b9f0d52ff1e5e3d8692b7fa9c73fc11f14f9229ad98d175280b751db7a88808ce160f804fbda9b4bb89b19b77f64e568e9e257333c0950e8c52606e03bb21dd818f6b70a46153f69df3c103f4f4cfb520dc6edbacd72e250b3313866bfc9c320d54946a2ff80a148cef2f781d1ecbea955b69bc169c03245504cab663782aa20963";
const M4096_PEER: &str = "40ccc19af5ff7f10dc0926cf00b7310e364fbb20378d5f66ee3734065181bdd4d552482fd8d5c7d33068401c609f2a3d772c864cbca766d43c82b1c4f79c07013b5c215fdf6d0d3cbeddfd403f1b6479c0c8078282c6aa02936f74796e084c6b9e6f6c7d6cf9eb4ab07ad5d96012d02fc20664d78412f49f3f5aebea26fe742ad74a02c5ca6cbc0dd81840bf7a996db8c81e3d4f49fee9cd41ba0d00bf12337296a2ba8ea060c4947e1474b9c92857526fbc0d8330d479f12ce5c79f709a6144bebc14c417e5e5c517af22d72cac28ffb4fc6304c192ab978adf06b885ccdc9422c7bac3fb53cd7c6ddc28953ccbc90e04a0bb3665bd910350d93987fc14c76308b14406023550f46fad1c9d7c5dcfc209791402ef4b4b372a510e6a00d25f679973902e27d787c6522d76f06ac88af290590c4388f95e2a52df73a7b86d82ed589e73f62ac3443f9145183b611325f6cb7855a60a74f6a1b9fb53b545d453a26ca6fb1d472b88d658f2c306e41f9da92879c454b05dac3e616a5c276e756dd0cb785efaa6df58374b23934798ef99b34cd89958ea7e75a3d67807baeed9e30cbe45ca59451a27ac4d0276ecd307e7e61d4725ebfb632872cd3357fb81c96a1c4e5d75dc8d656f6f2822bc8df8b5cf8ae29ce95831b479cab4b5f90d019f3c89a5cdfddae33f322c01442f5d02907c97338f00901d9bf5e39bc9502da4069bdb";
const M4096_SHARED: &str = "521f2c5ccec9242a3c020acc372a174fc708d3b4887fdfaabf197ec69ffc3f2049fecd6e4935a73ec8099e251c3d570ffc10418d8c23c751a0408406fc587981aafda006c77ae48439eee43981b62bf3aef19ec8d95b2e682a433699752e77c430c8061f48a094514499abbcf2bef1edb30034c007861b00067031f99dd3a6d3a7eea32572fdcd687261c6a9bddd22ca5bdbb91243b42ae9e6b13f7a809deaba0f85c7c6c96b1d7ee3038d34f3bcb831e66f95922533a1955b833a995d9bc181e02b6dc12750d5aa422c59332701042f47c1c0c6ac44e592b86cae9bbb8386bc739358a80ebafe52133b17565688030d7bd98602db24ef04262d3e5af7e350d7529af9dab02b12522a86b6e9500710d4b081d6e831038a3b811b14992f57a3f9990d051d20c3c1defd13cfe85e2131573153e59e4c6a12dc6eeb9b750300e81c9935ff963653963c586e4a8c96174d9ccd7694276db1fc86120a8b7fcb80be7066c071a52111674514bb3270d7c30bea9dfc16a6a475097dcaeb59b64b7a29a3cd93b07d09db5be33978fa3fb4bdf272200c5062ab6676593bc276b3f111ca10752a5e633651b9edced87a9cab1e3a462624be16bfde24806acd3f12b518f44914a09696c08519f18259822014a2824e5feab9964571743953f936218c2088248a37c1bb0a98782e080dac63efe4d34400021b6f4633ff32858184e61bae8497";

#[test]
fn modp4096_known_answer() {
    let group = ModpGroup::get(ModpPrime::Modp4096).unwrap();
    assert_eq!(
        group.prime().unwrap(),
        h(M4096_FULLPRIME),
        "aws-lc prime differs from RFC 3526"
    );
    let ke = AwsLcProvider::key_exchange_from_private(KeGroup::Modp4096, &h(M4096_X)).unwrap();
    assert_eq!(ke.public_value(), &h(M4096_GX)[..]);
    let shared = ke.finish(&h(M4096_PEER)).unwrap();
    assert_eq!(&shared[..], &h(M4096_SHARED)[..]);
}

/// Adds a small integer to a big-endian number of the same width.
fn add_small(n: &[u8], mut k: u16) -> Vec<u8> {
    let mut out = n.to_vec();
    for b in out.iter_mut().rev() {
        let s = u16::from(*b) + k;
        *b = s as u8;
        k = s >> 8;
    }
    out
}

fn sub_one(n: &[u8]) -> Vec<u8> {
    let mut out = n.to_vec();
    for b in out.iter_mut().rev() {
        let (v, borrow) = b.overflowing_sub(1);
        *b = v;
        if !borrow {
            break;
        }
    }
    out
}

#[test]
fn modp_rfc6989_rejects_out_of_range_values() {
    for (group, prime_hex) in [
        (KeGroup::Modp2048, M2048_FULLPRIME),
        (KeGroup::Modp3072, M3072_FULLPRIME),
        (KeGroup::Modp4096, M4096_FULLPRIME),
    ] {
        let p = h(prime_hex);
        let len = p.len();
        let zero = vec![0u8; len];
        let one = add_small(&zero, 1);
        let two = add_small(&zero, 2);
        let bad = [zero, one, sub_one(&p), p.clone(), add_small(&p, 1), vec![0xff; len]];
        for value in &bad {
            let ke = KeyExchange::generate(&AwsLcProvider::new(), group).unwrap();
            assert!(
                matches!(ke.finish(value), Err(CryptoError::InvalidPublicValue(_))),
                "{group:?} finish accepted a bad value"
            );
            assert!(
                matches!(
                    KeyExchange::respond(&AwsLcProvider::new(), group, value),
                    Err(CryptoError::InvalidPublicValue(_))
                ),
                "{group:?} respond accepted a bad value"
            );
        }
        // 2 and p-2 are the smallest and largest acceptable values.
        let ke = KeyExchange::generate(&AwsLcProvider::new(), group).unwrap();
        assert!(ke.finish(&two).is_ok());
        assert!(KeyExchange::respond(&AwsLcProvider::new(), group, &sub_one(&sub_one(&p))).is_ok());
        // Exact length: no short (unpadded) or long values.
        let ke = KeyExchange::generate(&AwsLcProvider::new(), group).unwrap();
        assert!(matches!(ke.finish(&two[1..]), Err(CryptoError::InvalidPublicValue(_))));
        let mut long = vec![0u8];
        long.extend_from_slice(&two);
        assert!(matches!(
            KeyExchange::respond(&AwsLcProvider::new(), group, &long),
            Err(CryptoError::InvalidPublicValue(_))
        ));
    }
}

#[test]
fn modp_both_sides_agree() {
    for group in [KeGroup::Modp2048, KeGroup::Modp3072, KeGroup::Modp4096] {
        let initiator = KeyExchange::generate(&AwsLcProvider::new(), group).unwrap();
        assert_eq!(initiator.public_value().len(), group.public_len());
        let (response, responder_secret) =
            KeyExchange::respond(&AwsLcProvider::new(), group, initiator.public_value()).unwrap();
        assert_eq!(response.len(), group.public_len());
        let initiator_secret = initiator.finish(&response).unwrap();
        assert_eq!(initiator_secret.len(), group.public_len());
        assert_eq!(&initiator_secret[..], &responder_secret[..]);
    }
}
