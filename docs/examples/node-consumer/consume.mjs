// A strangler event consumer in Node.js using only the built-in `crypto` module.
//
// Reads CloudEvents in the JSON event format (one per line, as the file:// router
// writes them, or as a broker client hands them over), decrypts each with the
// service's private JWK, verifies the producer's Ed25519 signature, checks that
// the envelope attributes match the signed and aad-bound ones, and prints
// {"id", "type", "signed_by", "recipient", "data"} per event.
//
//   node consume.mjs --key billing-1.private.jwk --producer shop-1.jwk < order.jsonl
//
// Exit code 1 if an event is rejected (the reason goes to stderr).
// Wire format: docs/security.md.
import crypto from "node:crypto";
import fs from "node:fs";

function arg(name) {
  const at = process.argv.indexOf(name);
  if (at < 0 || at + 1 >= process.argv.length) throw new Error(`missing ${name} FILE`);
  return process.argv[at + 1];
}

const b64u = (text) => Buffer.from(text, "base64url");
const u32 = (n) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
const lenPrefixed = (buf) => Buffer.concat([u32(buf.length), buf]);

// RFC 7518 §4.6.2: Concat KDF (SHA-256) for ECDH-ES+A256KW; apu/apv empty; 256-bit key.
function concatKdf(z, alg) {
  const otherInfo = Buffer.concat([lenPrefixed(Buffer.from(alg)), u32(0), u32(0), u32(256)]);
  return crypto.createHash("sha256").update(Buffer.concat([u32(1), z, otherInfo])).digest();
}

// RFC 3394 AES key unwrap with the default IV.
function aesKeyUnwrap(kek, wrapped) {
  const d = crypto.createDecipheriv("id-aes256-wrap", kek, Buffer.from("A6A6A6A6A6A6A6A6", "hex"));
  return Buffer.concat([d.update(wrapped), d.final()]);
}

function fail(reason, message) {
  const e = new Error(`${reason}: ${message}`);
  e.reason = reason;
  throw e;
}

export function openEvent(event, privateJwk, producerJwk) {
  if (event.datacontenttype !== "application/jose+json") fail("plaintext", "event is not encrypted");
  const jwe = JSON.parse(b64u(event.data_base64).toString("utf8"));
  const protectedHeader = JSON.parse(b64u(jwe.protected).toString("utf8"));
  if (protectedHeader.enc !== "A256GCM" || "zip" in protectedHeader) fail("malformed", "enc must be A256GCM, no zip");
  const mine = jwe.recipients.find((r) => r.header && r.header.kid === privateJwk.kid);
  if (!mine) fail("not-for-us", `encrypted for ${jwe.recipients.map((r) => r.header.kid).join(", ")}`);
  if (mine.header.alg !== "ECDH-ES+A256KW") fail("malformed", `alg ${mine.header.alg}`);

  const { kid, use, alg, created, retired, ...jwk } = privateJwk;
  const privateKey = crypto.createPrivateKey({ key: jwk, format: "jwk" });
  const ephemeral = crypto.createPublicKey({ key: mine.header.epk, format: "jwk" });
  const z = crypto.diffieHellman({ privateKey, publicKey: ephemeral });
  const cek = aesKeyUnwrap(concatKdf(z, "ECDH-ES+A256KW"), b64u(mine.encrypted_key));

  const decipher = crypto.createDecipheriv("aes-256-gcm", cek, b64u(jwe.iv));
  decipher.setAAD(Buffer.from(`${jwe.protected}.${jwe.aad}`, "ascii"));
  decipher.setAuthTag(b64u(jwe.tag));
  let jws;
  try {
    jws = Buffer.concat([decipher.update(b64u(jwe.ciphertext)), decipher.final()]).toString("ascii");
  } catch {
    fail("tampered", "AES-GCM authentication failed");
  }

  const parts = jws.split(".");
  if (parts.length !== 3) fail("unsigned", "payload is not a compact JWS");
  const header = JSON.parse(b64u(parts[0]).toString("utf8"));
  if (header.alg !== "Ed25519") fail("unsigned", `alg ${header.alg}`);
  if (header.kid !== producerJwk.kid) fail("untrusted", `signed by ${header.kid}`);
  const { kid: _k, use: _u, alg: _a, created: _c, retired: _r, ...producer } = producerJwk;
  const verifyKey = crypto.createPublicKey({ key: producer, format: "jwk" });
  if (!crypto.verify(null, Buffer.from(`${parts[0]}.${parts[1]}`, "ascii"), verifyKey, b64u(parts[2]))) {
    fail("bad-signature", `does not verify with ${header.kid}`);
  }

  const bound = JSON.parse(b64u(jwe.aad).toString("utf8"));
  for (const name of ["id", "type", "source", "subject"]) {
    if ((event[name] ?? "") !== bound[name]) fail("mismatch", `${name} differs from the aad`);
    if ((event[name] ?? "") !== header.ce[name]) fail("mismatch", `${name} differs from the signed value`);
  }
  if (instant(event.time) !== instant(header.ce.time)) fail("mismatch", "time differs from the signed value");
  return { id: event.id, type: event.type, signed_by: header.kid, recipient: privateJwk.kid,
           data: JSON.parse(b64u(parts[1]).toString("utf8")) };
}

// An RFC 3339 time as microseconds since the epoch (a BigInt): Date.parse alone keeps milliseconds,
// so a time rewritten within one millisecond would pass.
function instant(text) {
  const match = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$/.exec(text ?? "");
  if (!match) return null;
  const seconds = Date.parse(match[1] + match[3]);
  if (Number.isNaN(seconds)) return null;
  return BigInt(seconds) * 1000n + BigInt((match[2] ?? "").padEnd(6, "0").slice(0, 6));
}

const privateJwk = JSON.parse(fs.readFileSync(arg("--key"), "utf8"));
const producerJwk = JSON.parse(fs.readFileSync(arg("--producer"), "utf8"));
let failed = 0;
for (const line of fs.readFileSync(0, "utf8").split("\n")) {
  if (!line.trim()) continue;
  const event = JSON.parse(line);
  try {
    console.log(JSON.stringify(openEvent(event, privateJwk, producerJwk)));
  } catch (e) {
    failed += 1;
    console.error(`${event.id}: ${e.message}`);
  }
}
process.exit(failed ? 1 : 0);
