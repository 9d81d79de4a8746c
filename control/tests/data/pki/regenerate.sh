#!/bin/sh
# Regenerates the PKI test fixtures used by control/tests/pki_*.rs.
#
# Requires strongSwan's `pki` (Debian: strongswan-pki) and `openssl`.
# Run from this directory:  sh regenerate.sh
# Certificates live 20 years (7300 days) so the tests keep passing; the
# tests evaluate validity at fixed instants (see NOW in the tests), so the
# fixtures stay usable even after they expire in real time.
set -eu
cd "$(dirname "$0")"
PKI="pki"
L=7300

gen() { $PKI --gen --type "$1" ${2:+--size "$2"} --outform pem 2>/dev/null; }
pub() { $PKI --pub --in "$1" 2>/dev/null; }

# --- Root CAs -----------------------------------------------------------------
gen rsa 3072 > ca-rsa.key
$PKI --self --ca --lifetime $L --in ca-rsa.key --dn "C=CH, O=ironsa, CN=ironsa RSA Root CA" \
    --outform pem > ca-rsa.pem 2>/dev/null
gen ecdsa 384 > ca-ecdsa.key
$PKI --self --ca --lifetime $L --in ca-ecdsa.key --dn "C=CH, O=ironsa, CN=ironsa ECDSA Root CA" \
    --outform pem > ca-ecdsa.pem 2>/dev/null

# --- Intermediate CA (under the RSA root, pathlen 0, RSA-PSS signature) ----
gen ecdsa 256 > int.key
pub int.key | $PKI --issue --cacert ca-rsa.pem --cakey ca-rsa.key --ca --pathlen 0 --lifetime $L \
    --rsa-padding pss --dn "C=CH, O=ironsa, OU=Intermediate, CN=ironsa Intermediate CA" --outform pem > int.pem 2>/dev/null

# --- End entities -------------------------------------------------------------
# ECDSA P-256 under the intermediate (chain: ee-p256 -> int -> ca-rsa)
gen ecdsa 256 > ee-p256.key
pub ee-p256.key | $PKI --issue --cacert int.pem --cakey int.key --lifetime $L \
    --dn "C=CH, O=ironsa, CN=moon.example.com" --san moon.example.com --san moon@example.com \
    --san 192.0.2.1 --san 2001:db8::1 --flag serverAuth --outform pem > ee-p256.pem 2>/dev/null
# The same subject and key re-issued (another serial): a configuration
# reload must see it as a changed certificate.
pub ee-p256.key | $PKI --issue --cacert int.pem --cakey int.key --lifetime $L \
    --dn "C=CH, O=ironsa, CN=moon.example.com" --san moon.example.com --san moon@example.com \
    --san 192.0.2.1 --san 2001:db8::1 --flag serverAuth --outform pem > ee-p256-reissued.pem 2>/dev/null
# ECDSA P-384 under the ECDSA root
gen ecdsa 384 > ee-p384.key
pub ee-p384.key | $PKI --issue --cacert ca-ecdsa.pem --cakey ca-ecdsa.key --lifetime $L \
    --dn "C=CH, O=ironsa, CN=sun.example.com" --san sun.example.com --san sun@example.com \
    --outform pem > ee-p384.pem 2>/dev/null
# RSA-2048 under the RSA root
gen rsa 2048 > ee-rsa.key
pub ee-rsa.key | $PKI --issue --cacert ca-rsa.pem --cakey ca-rsa.key --lifetime $L \
    --dn "C=CH, O=ironsa, OU=Road Warriors, CN=carol@example.com" --san carol@example.com --san carol.example.com \
    --outform pem > ee-rsa.pem 2>/dev/null
# Ed25519 under the ECDSA root
gen ed25519 > ee-ed25519.key
pub ee-ed25519.key | $PKI --issue --cacert ca-ecdsa.pem --cakey ca-ecdsa.key --lifetime $L \
    --dn "C=CH, O=ironsa, CN=dave.example.com" --san dave.example.com \
    --outform pem > ee-ed25519.pem 2>/dev/null

# PKCS#8 forms of strongSwan's PKCS#1 / SEC1 keys
openssl pkcs8 -topk8 -nocrypt -in ee-rsa.key -out ee-rsa.pk8.pem
openssl pkcs8 -topk8 -nocrypt -in ee-p256.key -out ee-p256.pk8.pem
openssl pkcs8 -topk8 -nocrypt -in ee-p256.key -outform DER -out ee-p256.pk8.der

# --- Expired end entity (valid 2001-2002) -------------------------------------
pub ee-p256.key | $PKI --issue --cacert ca-ecdsa.pem --cakey ca-ecdsa.key \
    --not-before "01.01.01 00:00:00" --not-after "01.01.02 00:00:00" \
    --dn "C=CH, O=ironsa, CN=expired.example.com" --san expired.example.com --outform pem > ee-expired.pem 2>/dev/null

# --- Untrusted CA and its end entity -----------------------------------------
gen ecdsa 256 > untrusted-ca.key
$PKI --self --ca --lifetime $L --in untrusted-ca.key --dn "C=XX, O=Evil, CN=Untrusted CA" \
    --outform pem > untrusted-ca.pem 2>/dev/null
pub ee-p256.key | $PKI --issue --cacert untrusted-ca.pem --cakey untrusted-ca.key --lifetime $L \
    --dn "C=XX, O=Evil, CN=mallory.example.com" --san mallory.example.com --outform pem > ee-untrusted.pem 2>/dev/null

# --- Impostor: same issuer DN as the RSA root, different key (bad signature) ---
gen rsa 2048 > impostor-ca.key
$PKI --self --ca --lifetime $L --in impostor-ca.key --dn "C=CH, O=ironsa, CN=ironsa RSA Root CA" \
    --outform pem > impostor-ca.pem 2>/dev/null
pub ee-p256.key | $PKI --issue --cacert impostor-ca.pem --cakey impostor-ca.key --lifetime $L \
    --dn "C=CH, O=ironsa, CN=impostor.example.com" --outform pem > ee-impostor.pem 2>/dev/null

# --- Too deep: root + 9 intermediates + end entity (ECDSA P-256) ------------
gen ecdsa 256 > deep-0.key
$PKI --self --ca --lifetime $L --in deep-0.key --dn "CN=deep 0" --outform pem > deep-0.pem 2>/dev/null
i=1
while [ $i -le 9 ]; do
    p=$((i - 1))
    gen ecdsa 256 > deep-$i.key
    pub deep-$i.key | $PKI --issue --cacert deep-$p.pem --cakey deep-$p.key --ca --lifetime $L \
        --dn "CN=deep $i" --outform pem > deep-$i.pem 2>/dev/null
    i=$((i + 1))
done
pub ee-p256.key | $PKI --issue --cacert deep-9.pem --cakey deep-9.key --lifetime $L \
    --dn "CN=deep leaf" --outform pem > deep-leaf.pem 2>/dev/null
cat deep-1.pem deep-2.pem deep-3.pem deep-4.pem deep-5.pem deep-6.pem deep-7.pem deep-8.pem deep-9.pem > deep-chain.pem
rm -f deep-*.key deep-[1-9].pem

# --- Constraint violations ------------------------------------------------
# A CA below the pathlen-0 intermediate, and an end entity under it.
gen ecdsa 256 > sub-ca.key
pub sub-ca.key | $PKI --issue --cacert int.pem --cakey int.key --ca --lifetime $L \
    --dn "C=CH, O=ironsa, CN=Sub CA below pathlen 0" --outform pem > sub-ca.pem 2>/dev/null
pub ee-p384.key | $PKI --issue --cacert sub-ca.pem --cakey sub-ca.key --lifetime $L \
    --dn "C=CH, O=ironsa, CN=pathlen.example.com" --outform pem > ee-pathlen.pem 2>/dev/null
rm -f sub-ca.key
# An end entity "issued" by another end entity (no cA flag). pki refuses
# to do that, so openssl signs it.
openssl req -new -key ee-p384.key -subj "/C=CH/O=ironsa/CN=not-a-ca.example.com" -out by-non-ca.csr
openssl x509 -req -in by-non-ca.csr -CA ee-p256.pem -CAkey ee-p256.key -days $L -set_serial 7 \
    -sha256 -out ee-by-non-ca.pem 2>/dev/null
rm -f by-non-ca.csr

# --- DER copies ---------------------------------------------------------------
openssl x509 -in ca-rsa.pem -outform DER -out ca-rsa.der
openssl x509 -in ee-p256.pem -outform DER -out ee-p256.der

# --- CERTREQ hashes: SHA-1 of the subjectPublicKey (RFC 7296 §3.7) -----------
openssl x509 -in ca-rsa.pem -noout -pubkey | openssl rsa -pubin -RSAPublicKey_out -outform DER 2>/dev/null \
    | openssl sha1 -r | cut -d' ' -f1 > ca-rsa.certreq.hex
# EC subjectPublicKey = the uncompressed point (last 97 bytes of a P-384 SPKI)
openssl x509 -in ca-ecdsa.pem -noout -pubkey | openssl pkey -pubin -outform DER | tail -c 97 \
    | openssl sha1 -r | cut -d' ' -f1 > ca-ecdsa.certreq.hex

# --- Signatures made by openssl over a fixed message -------------------------
printf 'ironsa AUTH octets: IKE_SA_INIT message || Ni || prf(SK_pr, IDr)\n' > message.bin
openssl dgst -sha256 -sign ee-rsa.key -out sig-rsa-pkcs1-sha256.bin message.bin
openssl dgst -sha1 -sign ee-rsa.key -out sig-rsa-pkcs1-sha1.bin message.bin
openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -sigopt rsa_mgf1_md:sha256 \
    -sign ee-rsa.key -out sig-rsa-pss-sha256.bin message.bin
openssl dgst -sha256 -sign ee-p256.key -out sig-p256-sha256.der message.bin
openssl dgst -sha384 -sign ee-p384.key -out sig-p384-sha384.der message.bin
openssl pkeyutl -sign -rawin -inkey ee-ed25519.key -in message.bin -out sig-ed25519.bin

# ECDSA DER -> raw r||s (RFC 4754) via asn1parse
der_to_raw() { # $1 = sig file, $2 = field length in bytes
    openssl asn1parse -inform DER -in "$1" | awk -F: '/INTEGER/ {print $NF}' | while read -r h; do
        printf "%0$(( $2 * 2 ))s" "$h" | tr ' ' 0
    done | xxd -r -p
}
der_to_raw sig-p256-sha256.der 32 > sig-p256-sha256.raw
der_to_raw sig-p384-sha384.der 48 > sig-p384-sha384.raw

# --- Malformed inputs ---------------------------------------------------------
head -c 200 ee-p256.der > truncated.der
