"use strict";
// The invite page's one script: reads the token from the fragment (it never leaves the
// browser), checks it as the SDK's parser does (64 hex, protocol section 5), and shows the
// link, the deep link and a QR code of the link. It makes no request.

// A QR code encoder (ISO/IEC 18004): byte mode, error correction level M, versions 1 to 40.
// Returns the rows of modules (true = dark), or null when the bytes do not fit version 40.
const qrCode = (() => {
  // Per version at level M: error correction codewords per block, and blocks.
  const EC = [10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26,
    26, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28];
  const BLOCKS = [1, 1, 1, 2, 2, 4, 4, 4, 5, 5, 5, 8, 9, 9, 10, 10, 11, 13, 14, 16, 17, 17, 18,
    20, 21, 23, 25, 26, 28, 29, 31, 33, 35, 37, 38, 40, 43, 45, 47, 49];
  // All codewords of version v: the modules that function patterns leave, over 8.
  const total = (v) => {
    const a = Math.floor(v / 7) + 2;
    let n = (16 * v + 128) * v + 64;
    if (v >= 2) n -= (25 * a - 10) * a - 55 + (v >= 7 ? 36 : 0);
    return n >> 3;
  };
  const dataLen = (v) => total(v) - EC[v - 1] * BLOCKS[v - 1];
  // GF(256) modulo x^8 + x^4 + x^3 + x^2 + 1.
  const mul = (x, y) => {
    let z = 0;
    for (let i = 7; i >= 0; i--) z = (z << 1) ^ ((z >>> 7) * 0x11d) ^ (((y >>> i) & 1) * x);
    return z;
  };
  // Reed-Solomon: the remainder of data(x) * x^n over the generator of degree n.
  const ecc = (data, n) => {
    const gen = new Array(n).fill(0);
    gen[n - 1] = 1;
    for (let i = 0, root = 1; i < n; i++, root = mul(root, 2)) {
      for (let j = 0; j < n; j++) gen[j] = mul(gen[j], root) ^ (j + 1 < n ? gen[j + 1] : 0);
    }
    const rem = new Array(n).fill(0);
    for (const b of data) {
      const f = b ^ rem.shift();
      rem.push(0);
      for (let i = 0; i < n; i++) rem[i] ^= mul(gen[i], f);
    }
    return rem;
  };
  const MASKS = [
    (x, y) => (x + y) % 2,
    (x, y) => y % 2,
    (x) => x % 3,
    (x, y) => (x + y) % 3,
    (x, y) => (Math.floor(x / 3) + Math.floor(y / 2)) % 2,
    (x, y) => ((x * y) % 2) + ((x * y) % 3),
    (x, y) => (((x * y) % 2) + ((x * y) % 3)) % 2,
    (x, y) => (((x + y) % 2) + ((x * y) % 3)) % 2,
  ]; // a module is flipped where its mask gives 0

  return (bytes) => {
    let v = 1;
    while (v <= 40 && 12 + (v < 10 ? 0 : 8) + 8 * bytes.length > 8 * dataLen(v)) v++;
    if (v > 40) return null;

    // Data codewords: mode 0100, count, bytes, terminator, padding.
    const bits = [];
    const put = (value, len) => {
      for (let i = len - 1; i >= 0; i--) bits.push((value >>> i) & 1);
    };
    const cap = 8 * dataLen(v);
    put(4, 4);
    put(bytes.length, v < 10 ? 8 : 16);
    bytes.forEach((b) => put(b, 8));
    put(0, Math.min(4, cap - bits.length));
    put(0, (8 - (bits.length % 8)) % 8);
    for (let pad = 0xec; bits.length < cap; pad ^= 0xfd) put(pad, 8);
    const data = [];
    for (let i = 0; i < bits.length; i += 8) data.push(parseInt(bits.slice(i, i + 8).join(""), 2));

    // Blocks (the first ones one codeword shorter) with their error correction, interleaved.
    const n = BLOCKS[v - 1];
    const ecLen = EC[v - 1];
    const short = Math.floor(total(v) / n) - ecLen;
    const blocks = [];
    for (let i = 0, k = 0; i < n; i++) {
      const len = short + (i < n - (total(v) % n) ? 0 : 1);
      blocks.push(data.slice(k, (k += len)));
    }
    const eccs = blocks.map((b) => ecc(b, ecLen));
    const stream = [];
    for (let i = 0; i <= short; i++) blocks.forEach((b) => i < b.length && stream.push(b[i]));
    for (let i = 0; i < ecLen; i++) eccs.forEach((e) => stream.push(e[i]));

    // Function patterns: timing, finders, alignment, format (drawn again per mask), version.
    const size = 17 + 4 * v;
    const grid = Array.from({ length: size }, () => new Array(size).fill(false));
    const fixed = Array.from({ length: size }, () => new Array(size).fill(false));
    const set = (x, y, dark) => {
      grid[y][x] = dark;
      fixed[y][x] = true;
    };
    const square = (cx, cy, r, dark) => {
      for (let dy = -r; dy <= r; dy++) {
        for (let dx = -r; dx <= r; dx++) {
          const x = cx + dx;
          const y = cy + dy;
          if (x >= 0 && x < size && y >= 0 && y < size) set(x, y, dark(Math.max(Math.abs(dx), Math.abs(dy))));
        }
      }
    };
    for (let i = 0; i < size; i++) {
      set(6, i, i % 2 === 0);
      set(i, 6, i % 2 === 0);
    }
    for (const [x, y] of [[3, 3], [size - 4, 3], [3, size - 4]]) square(x, y, 4, (d) => d !== 2 && d !== 4);
    if (v > 1) {
      const k = Math.floor(v / 7) + 2;
      const step = Math.floor((v * 8 + k * 3 + 5) / (k * 4 - 4)) * 2;
      const pos = [6];
      for (let p = size - 7; pos.length < k; p -= step) pos.splice(1, 0, p);
      pos.forEach((x, i) => pos.forEach((y, j) => {
        if (!((i === 0 && (j === 0 || j === k - 1)) || (i === k - 1 && j === 0))) square(x, y, 2, (d) => d !== 1);
      }));
    }
    const format = (mask) => {
      // Level M is 00: the 5 bits are the mask's; BCH(15,5), then the fixed pattern.
      let rem = mask;
      for (let i = 0; i < 10; i++) rem = (rem << 1) ^ ((rem >>> 9) * 0x537);
      const f = ((mask << 10) | rem) ^ 0x5412;
      const bit = (i) => ((f >>> i) & 1) === 1;
      for (let i = 0; i < 15; i++) {
        set(8, i < 6 ? i : i < 8 ? i + 1 : size - 15 + i, bit(i));
        set(i < 8 ? size - 1 - i : i < 9 ? 7 : 14 - i, 8, bit(i));
      }
      set(8, size - 8, true);
    };
    format(0);
    if (v >= 7) {
      let rem = v;
      for (let i = 0; i < 12; i++) rem = (rem << 1) ^ ((rem >>> 11) * 0x1f25);
      for (let i = 0; i < 18; i++) {
        const dark = ((((v << 12) | rem) >>> i) & 1) === 1;
        set(size - 11 + (i % 3), Math.floor(i / 3), dark);
        set(Math.floor(i / 3), size - 11 + (i % 3), dark);
      }
    }

    // The codewords, in two-module columns zigzagging up and down from the right.
    let i = 0;
    for (let right = size - 1; right >= 1; right -= 2) {
      if (right === 6) right = 5;
      for (let vert = 0; vert < size; vert++) {
        for (let j = 0; j < 2; j++) {
          const x = right - j;
          const y = ((right + 1) & 2) === 0 ? size - 1 - vert : vert;
          if (!fixed[y][x] && i < stream.length * 8) {
            grid[y][x] = ((stream[i >>> 3] >>> (7 - (i & 7))) & 1) === 1;
            i++;
          }
        }
      }
    }

    // The mask with the lowest penalty (ISO/IEC 18004, 7.8.3).
    const flip = (m) => grid.forEach((row, y) => row.forEach((c, x) => {
      if (!fixed[y][x] && MASKS[m](x, y) === 0) row[x] = !c;
    }));
    const penalty = () => {
      let score = 0;
      let dark = 0;
      for (let k = 0; k < size; k++) {
        for (const line of [grid[k], grid.map((row) => row[k])]) {
          const s = line.map(Number).join("");
          for (const run of s.match(/0{5,}|1{5,}/g) || []) score += run.length - 2;
          score += 40 * (s.match(/(?=10111010000|00001011101)/g) || []).length;
        }
      }
      grid.forEach((row, y) => row.forEach((c, x) => {
        dark += c;
        if (x && y && c === row[x - 1] && c === grid[y - 1][x] && c === grid[y - 1][x - 1]) score += 3;
      }));
      return score + 10 * Math.floor(Math.abs((dark * 100) / (size * size) - 50) / 5);
    };
    let best = 0;
    let least = Infinity;
    for (let m = 0; m < 8; m++) {
      flip(m);
      format(m);
      const score = penalty();
      if (score < least) [best, least] = [m, score];
      flip(m);
    }
    flip(best);
    format(best);
    return grid;
  };
})();

// The QR code as an SVG image: dark modules on white, in a 4-module quiet zone.
const qrSvg = (rows) => {
  const svg = (tag, attributes) => {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.entries(attributes).forEach(([k, val]) => e.setAttribute(k, val));
    return e;
  };
  const n = rows.length + 8;
  let d = "";
  rows.forEach((row, y) => row.forEach((dark, x) => {
    if (dark) d += `M${x} ${y}h1v1h-1z`;
  }));
  const image = svg("svg", { viewBox: `-4 -4 ${n} ${n}`, "shape-rendering": "crispEdges", "aria-hidden": "true" });
  image.append(svg("rect", { x: -4, y: -4, width: n, height: n, fill: "#fff" }), svg("path", { d, fill: "#000" }));
  return image;
};

const $ = (id) => document.getElementById(id);

const show = () => {
  const fragment = location.hash.slice(1);
  const token = fragment.toLowerCase();
  // The path ends with the segment "invite" in any case (protocol section 5.5, step 10); what
  // precedes it is the server's base path. A query is no part of a link, so it is left out.
  const base = /\/invite$/i.test(location.pathname) ? location.pathname.slice(0, -7) : null;
  const https = location.protocol === "https:";
  const loopback = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/i.test(location.hostname);
  const damaged = "This invite link is damaged: the code after # must be 64 characters of 0-9 and a-f,";
  const again = " Ask for the link again, or copy all of it.";
  let problem = null;
  if (fragment === "") {
    problem = "This link has no invite code. An invite link ends with # and 64 characters: ask the person who invited you to send the whole link again.";
  } else if (!/^[0-9a-f]*$/.test(token)) {
    problem = `${damaged} and it holds other characters.${again}`;
  } else if (token.length !== 64) {
    problem = `${damaged} and it has ${token.length}.${again}`;
  } else if (base === null || !(https || loopback)) {
    problem = "This address is not an invite link of this server: the link must be https:// and end with /invite#code. Ask for the link again.";
  }
  $("bad").hidden = problem === null;
  $("ok").hidden = problem !== null;
  $("why").textContent = problem || "";
  if (problem !== null) return;

  const rest = `${location.host}${base}/invite#${token}`;
  const link = `${location.protocol}//${rest}`;
  $("open").href = `unibus://${rest}`;
  $("open").hidden = !https;
  $("nodeep").hidden = https;
  $("link").value = link;
  const rows = qrCode(new TextEncoder().encode(link));
  $("qr").replaceChildren(rows ? qrSvg(rows) : "This link is too long for a QR code: copy it instead.");
};

$("copy").addEventListener("click", () => {
  const done = (ok) => {
    $("copied").textContent = ok ? "Link copied." : "Select the link and copy it.";
  };
  $("link").select();
  if (navigator.clipboard) navigator.clipboard.writeText($("link").value).then(() => done(true), () => done(false));
  else done(document.execCommand("copy"));
});
addEventListener("hashchange", show);
$("app").hidden = false;
show();
