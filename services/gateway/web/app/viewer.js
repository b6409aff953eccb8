// The 3D preview: an STL or OBJ in a three.js scene, Z up as in FreeCAD, with a grid, axes,
// orbit/zoom (OrbitControls) and fit. preserveDrawingBuffer keeps the last frame readable
// (the browser tests check its pixels).

import * as THREE from "three";
import { OrbitControls } from "three/addons/OrbitControls.js";
import { STLLoader } from "three/addons/STLLoader.js";
import { OBJLoader } from "three/addons/OBJLoader.js";

export const BACKGROUND = 0xf3f5f8;

export class Viewer {
  constructor(container) {
    this.container = container;
    this.renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.renderer.setClearColor(BACKGROUND, 1);
    this.renderer.domElement.setAttribute("aria-label", "3D preview of the model: drag to turn, scroll to zoom");
    this.renderer.domElement.setAttribute("role", "img");
    container.appendChild(this.renderer.domElement);

    this.scene = new THREE.Scene();
    this.camera = new THREE.PerspectiveCamera(45, 1, 0.1, 100000);
    this.camera.up.set(0, 0, 1);
    this.camera.position.set(120, -160, 110);
    this.scene.add(new THREE.HemisphereLight(0xffffff, 0x8890a0, 2.2));
    const sun = new THREE.DirectionalLight(0xffffff, 1.6);
    sun.position.set(1, -1.5, 2);
    this.camera.add(sun);
    this.scene.add(this.camera);

    this.grid = new THREE.GridHelper(200, 20, 0x9aa4b2, 0xd5dae1);
    this.grid.rotation.x = Math.PI / 2; // XY plane: Z is up
    this.scene.add(this.grid);
    this.axes = new THREE.AxesHelper(40);
    this.scene.add(this.axes);

    this.controls = new OrbitControls(this.camera, this.renderer.domElement);
    this.controls.enableDamping = false;
    this.controls.addEventListener("change", () => this.render());
    this.model = null;

    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(container);
    this.resize();
  }

  resize() {
    const width = this.container.clientWidth || 1;
    const height = this.container.clientHeight || 1;
    this.renderer.setSize(width, height, false);
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
    this.render();
  }

  render() {
    this.renderer.render(this.scene, this.camera);
  }

  clear() {
    if (this.model) {
      this.scene.remove(this.model);
      this.model.traverse((o) => {
        if (o.geometry) o.geometry.dispose();
      });
      this.model = null;
    }
    this.render();
  }

  /** Shows the model in `buffer` (an ArrayBuffer of the given format: "stl" or "obj"). */
  show(buffer, format) {
    this.clear();
    const material = new THREE.MeshStandardMaterial({ color: 0x3d7fd9, metalness: 0.1, roughness: 0.55, side: THREE.DoubleSide });
    let object;
    if (format === "stl") {
      const geometry = new STLLoader().parse(buffer);
      geometry.computeVertexNormals();
      object = new THREE.Mesh(geometry, material);
    } else {
      object = new OBJLoader().parse(new TextDecoder().decode(buffer));
      object.traverse((o) => {
        if (o.isMesh) {
          o.material = material;
          if (!o.geometry.attributes.normal) o.geometry.computeVertexNormals();
        }
      });
    }
    this.model = object;
    this.scene.add(object);
    this.fit();
  }

  /** Frames the model, and sizes the grid and axes to it. */
  fit() {
    if (!this.model) {
      this.render();
      return;
    }
    const box = new THREE.Box3().setFromObject(this.model);
    const size = box.getSize(new THREE.Vector3());
    const center = box.getCenter(new THREE.Vector3());
    const radius = Math.max(size.length() / 2, 1);
    const step = 10 ** Math.floor(Math.log10(radius));
    const extent = Math.ceil((radius * 3) / step) * step;
    this.scene.remove(this.grid);
    this.grid = new THREE.GridHelper(extent * 2, Math.min(Math.round((extent * 2) / step), 200), 0x9aa4b2, 0xd5dae1);
    this.grid.rotation.x = Math.PI / 2;
    this.grid.position.set(center.x, center.y, box.min.z);
    this.scene.add(this.grid);
    this.axes.scale.setScalar(radius / 40);
    const distance = radius / Math.sin((this.camera.fov * Math.PI) / 360);
    const direction = new THREE.Vector3(0.6, -0.85, 0.55).normalize();
    this.camera.position.copy(center).addScaledVector(direction, distance * 1.5);
    this.camera.near = distance / 100;
    this.camera.far = distance * 100;
    this.camera.updateProjectionMatrix();
    this.controls.target.copy(center);
    this.controls.update();
    this.render();
  }

  dispose() {
    this.resizeObserver.disconnect();
    this.controls.dispose();
    this.clear();
    this.renderer.dispose();
    this.renderer.domElement.remove();
  }
}

/** Whether this browser can draw WebGL at all. */
export function webglAvailable() {
  try {
    const canvas = document.createElement("canvas");
    return Boolean(canvas.getContext("webgl2") || canvas.getContext("webgl"));
  } catch {
    return false;
  }
}
