// vaekit latent explorer: plain JavaScript, no build step, talking only to the same server's JSON API.
//
//   /v1/model  -> data shape, latent size          /v1/sample -> the grid      /v1/encode -> each sample's code
//   slider move -> /v1/decode of the edited code   A, B chosen -> /v1/interpolate strip
//
// No model maths happens here: the page edits latent codes and draws what the server returns.
"use strict";

const SAMPLES = 16;
const STRIP_STEPS = 8;
const SLIDER_SPAN = 3; // sliders run over [-3, 3]: nearly all of the N(0, 1) prior of each dimension
const CELL_PX = 56;

const state = { card: null, codes: [], samples: [], a: 0, b: 1, z: [], decoding: false, pending: false };
const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const data = await response.json();
  if (!response.ok) {
    const detail = Array.isArray(data.detail) ? data.detail.map((d) => `${d.loc.join(".")}: ${d.msg}`) : [data.detail];
    throw new Error(`${path}: ${detail.join("; ")}`);
  }
  return data;
}

function setStatus(text) { $("status").textContent = text; }

// Draw one example (C, H, W) with values in [0, 1] on a canvas, scaled up without smoothing.
function draw(canvas, image) {
  const [channels, height, width] = state.card.data_shape;
  const pixels = new ImageData(width, height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const offset = 4 * (y * width + x);
      for (let c = 0; c < 3; c++) {
        const value = image[channels === 1 ? 0 : c][y][x];
        pixels.data[offset + c] = Math.round(255 * Math.min(1, Math.max(0, value)));
      }
      pixels.data[offset + 3] = 255;
    }
  }
  const native = document.createElement("canvas");
  native.width = width;
  native.height = height;
  native.getContext("2d").putImageData(pixels, 0, 0);
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.drawImage(native, 0, 0, canvas.width, canvas.height);
  canvas.dataset.version = String(Number(canvas.dataset.version || 0) + 1);
}

function cellSize() {
  const [, height, width] = state.card.data_shape;
  const scale = Math.max(1, Math.round(CELL_PX / Math.max(height, width)));
  return [width * scale, height * scale];
}

function makeCanvas(label) {
  const canvas = document.createElement("canvas");
  [canvas.width, canvas.height] = cellSize();
  canvas.setAttribute("aria-label", label);
  return canvas;
}

// A conditional model draws everything as the chosen class; an unconditional one takes no label at all.
function label() { return state.card.num_classes > 0 ? Number($("label").value) : undefined; }

async function newSamples() {
  const temperature = Number($("temperature").value);
  const { x } = await api("/v1/sample", { n: SAMPLES, temperature, label: label() });
  const { mean } = await api("/v1/encode", { x, y: label() });
  state.samples = x;
  state.codes = mean;
  const grid = $("grid");
  grid.replaceChildren();
  x.forEach((image, i) => {
    const canvas = makeCanvas(`sample ${i}`);
    canvas.dataset.index = String(i);
    canvas.addEventListener("click", () => run(() => choose(i)));
    grid.appendChild(canvas);
    draw(canvas, image);
  });
  state.a = 0;
  state.b = 1;
  await showChosen();
}

async function choose(i) {
  if (i === state.a) return;
  state.b = state.a;
  state.a = i;
  await showChosen();
}

async function showChosen() {
  document.querySelectorAll("#grid canvas").forEach((canvas, i) => {
    canvas.classList.toggle("a", i === state.a);
    canvas.classList.toggle("b", i === state.b);
  });
  setSliders(state.codes[state.a]);
  await Promise.all([decodeCurrent(), interpolate()]);
}

function buildSliders(latentDim) {
  const box = $("sliders");
  box.replaceChildren();
  for (let d = 0; d < latentDim; d++) {
    const label = document.createElement("label");
    label.htmlFor = `dim-${d}`;
    label.textContent = `z${d}`;
    const slider = document.createElement("input");
    Object.assign(slider, { type: "range", id: `dim-${d}`, min: -SLIDER_SPAN, max: SLIDER_SPAN, step: 0.01 });
    slider.dataset.dim = String(d);
    const value = document.createElement("output");
    value.id = `dim-${d}-value`;
    slider.addEventListener("input", () => {
      state.z[d] = Number(slider.value);
      value.textContent = state.z[d].toFixed(2);
      decodeCurrent();
    });
    box.append(label, slider, value);
  }
}

function setSliders(code) {
  state.z = code.slice();
  code.forEach((v, d) => {
    $(`dim-${d}`).value = String(v); // the browser clamps the thumb to [-3, 3]; the code keeps its value
    $(`dim-${d}-value`).textContent = v.toFixed(2);
  });
}

// Decode the edited code; while one request is in flight, only the latest edit is sent next.
async function decodeCurrent() {
  if (state.decoding) { state.pending = true; return; }
  state.decoding = true;
  try {
    do {
      state.pending = false;
      const { x } = await api("/v1/decode", { z: [state.z], y: label() });
      draw($("decoded"), x[0]);
    } while (state.pending);
  } catch (error) {
    setStatus(error.message);
  } finally {
    state.decoding = false;
  }
}

async function interpolate() {
  const body = {
    z_a: state.codes[state.a], z_b: state.codes[state.b], steps: STRIP_STEPS, method: $("method").value, label: label(),
  };
  const { x } = await api("/v1/interpolate", body);
  const strip = $("strip");
  strip.replaceChildren();
  x.forEach((image, i) => {
    const canvas = makeCanvas(`interpolation step ${i}`);
    strip.appendChild(canvas);
    draw(canvas, image);
  });
}

async function run(task) {
  const button = $("new-samples");
  button.disabled = true;
  document.body.dataset.state = "busy";
  try {
    await task();
    setStatus("");
  } catch (error) {
    setStatus(error.message);
  } finally {
    button.disabled = false;
    document.body.dataset.state = "ready";
  }
}

async function start() {
  state.card = await api("/v1/model");
  const card = state.card;
  const elbo = card.metrics && typeof card.metrics.val_elbo === "number" ? `, validation ELBO ${card.metrics.val_elbo.toFixed(2)} nats` : "";
  $("summary").textContent = `${card.config.architecture} VAE, ${card.config.likelihood} likelihood, ` +
    `${card.latent_dim} latent dimensions, data ${card.data_shape.join(" x ")}${elbo}`;
  buildSliders(card.latent_dim);
  if (card.num_classes > 0) {
    const select = $("label");
    for (let k = 0; k < card.num_classes; k++) select.add(new Option(String(k), String(k)));
    $("label-control").hidden = false;
    select.addEventListener("change", () => run(newSamples));
  }
  $("new-samples").addEventListener("click", () => run(newSamples));
  $("temperature").addEventListener("input", () => {
    $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
  });
  $("temperature").addEventListener("change", () => run(newSamples));
  $("method").addEventListener("change", () => run(interpolate));
  $("reset-sliders").addEventListener("click", () => run(async () => {
    setSliders(state.codes[state.a]);
    await decodeCurrent();
  }));
  const [width, height] = cellSize();
  $("decoded").width = 3 * width;
  $("decoded").height = 3 * height;
  await newSamples();
}

run(start);
