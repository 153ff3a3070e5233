"""NetVLAD: normalisation, order invariance, region sums, k-means initialisation, whitening, search, checkpoints."""

import sys

import numpy as np
import pytest
import torch

from segloc.errors import SeglocError
from segloc.features.retrieval import search_inner_product
from segloc.models import build_model, load_checkpoint, save_checkpoint
from segloc.models.netvlad import REGION_NAMES, NetVlad, NetVladConfig, NetVladLayer, PcaWhitening, normalize_vlad, sample_features


def _layer(num_clusters=8, dim=16, seed=0):
    torch.manual_seed(seed)
    layer = NetVladLayer(num_clusters, dim)
    features = torch.randn(500, dim)
    centroids = torch.nn.functional.normalize(torch.randn(num_clusters, dim), dim=1)
    layer.initialise(centroids, features)
    return layer


def test_output_is_normalised_per_cluster_and_overall():
    layer = _layer()
    out = layer(torch.randn(3, 16, 5, 7)).descriptor
    assert out.shape == (3, 8 * 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    blocks = out.view(3, 8, 16).norm(dim=2)
    torch.testing.assert_close(blocks, torch.full_like(blocks, 1 / np.sqrt(8)), atol=1e-4, rtol=0)


def test_output_is_invariant_to_the_order_of_the_features():
    layer = _layer()
    feature_map = torch.randn(2, 16, 6, 5)
    flat = feature_map.flatten(2)
    permuted = flat[:, :, torch.randperm(flat.shape[2])].reshape(2, 16, 5, 6)  # other positions, other grid
    torch.testing.assert_close(layer(feature_map).descriptor, layer(permuted).descriptor, atol=1e-5, rtol=1e-4)


def test_region_sums_add_up_to_the_image():
    layer = _layer()
    feature_map = torch.randn(2, 16, 7, 9)  # odd sizes: the split is uneven
    image, regions = layer.region_sums(feature_map)
    torch.testing.assert_close(image, layer.sums(feature_map.flatten(2)), atol=1e-5, rtol=1e-4)
    assert regions.shape == (2, len(REGION_NAMES), 8, 16)
    torch.testing.assert_close(regions[:, :4].sum(dim=1), image, atol=1e-5, rtol=1e-4)  # quarters
    torch.testing.assert_close(regions[:, 4] + regions[:, 5], image, atol=1e-5, rtol=1e-4)  # top + bottom
    torch.testing.assert_close(regions[:, 6] + regions[:, 7], image, atol=1e-5, rtol=1e-4)  # left + right
    out = layer(feature_map, regions=True)
    torch.testing.assert_close(out.descriptor, normalize_vlad(image))
    torch.testing.assert_close(out.regions.norm(dim=2), torch.ones(2, 8), atol=1e-5, rtol=0)
    with pytest.raises(SeglocError, match="at least 2 x 2"):
        layer.region_sums(torch.randn(1, 16, 1, 4))


def test_kmeans_initialisation_assigns_features_to_their_nearest_centroid():
    net = NetVlad(NetVladConfig(pretrained=False, num_clusters=4)).eval()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, net.channels)).astype(np.float32)
    features = np.concatenate([c + 0.05 * rng.normal(size=(50, net.channels)) for c in centres]).astype(np.float32)
    net.initialise_clusters(features, seed=1)
    normalised = torch.nn.functional.normalize(torch.from_numpy(features), dim=1)
    with torch.no_grad():
        weights = net.netvlad.assignments(normalised.T[None])[0]  # (K, N)
    assert float(weights.max(dim=0).values.mean()) > 0.95  # alpha makes the assignment nearly hard
    assert len(set(weights.argmax(dim=0).tolist())) == 4


def test_network_shapes_registry_and_checkpoint_round_trip(tmp_path):
    net = build_model("netvlad", {"pretrained": False, "num_clusters": 8}).eval()
    assert isinstance(net, NetVlad) and net.channels == 112 and net.stride == 16
    images = torch.rand(2, 3, 64, 96)
    out = net(images, regions=True)
    assert out.descriptor.shape == (2, net.dimension) and out.regions.shape == (2, 8, net.dimension)
    trainable = {name.split(".")[1] for name, p in net.encoder.named_parameters() if p.requires_grad}
    assert trainable == {"8", "9", "10"}  # the last three blocks of the cut encoder
    save_checkpoint(net, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    torch.testing.assert_close(loaded(images).descriptor, out.descriptor, atol=1e-5, rtol=1e-4)
    assert sample_features(net.features(images), 10).shape == (20, 112)


def test_pca_whitening_round_trip():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(30, 50)) @ rng.normal(size=(50, 50))
    whitening = PcaWhitening.fit(data, 29)  # full rank of 30 centred points
    projected = whitening.project(data)
    np.testing.assert_allclose(whitening.unproject(projected), data, atol=1e-3 * np.abs(data).max())
    np.testing.assert_allclose(np.cov(projected.T), np.diag(whitening.variances / (whitening.variances + whitening.eps)), atol=1e-3)
    stored = PcaWhitening.from_arrays({k: np.array(v) for k, v in whitening.to_arrays().items()})
    np.testing.assert_allclose(stored.whiten(data), whitening.whiten(data), atol=1e-6)
    assert whitening.whiten(data[:3]).shape == (3, 29)
    np.testing.assert_allclose(np.linalg.norm(whitening.whiten(data), axis=1), 1.0, atol=1e-5)
    reduced = PcaWhitening.fit(data, 5)
    assert reduced.whiten(data).shape == (30, 5)
    with pytest.raises(SeglocError, match="at most 29"):
        PcaWhitening.fit(data, 30)


@pytest.mark.parametrize("backend", ["installed", "numpy"])
def test_search_returns_the_largest_inner_products(backend, monkeypatch):
    if backend == "numpy":
        monkeypatch.setitem(sys.modules, "faiss", None)  # the import fails: the numpy path
    rng = np.random.default_rng(0)
    database = rng.normal(size=(40, 8)).astype(np.float32)
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    indices, scores = search_inner_product(queries, database, 3)
    brute = queries @ database.T
    np.testing.assert_array_equal(indices, np.argsort(-brute, axis=1)[:, :3])
    np.testing.assert_allclose(scores, np.sort(brute, axis=1)[:, ::-1][:, :3], rtol=1e-5)
    assert search_inner_product(queries, database, 100)[0].shape == (5, 40)


def test_describe_images_batches_by_size_and_matches_the_network():
    from segloc.models.netvlad import describe_images

    net = NetVlad(NetVladConfig(pretrained=False, num_clusters=4)).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in ((64, 96, 3), (96, 64, 3), (64, 96, 3))]
    described = describe_images(net, images, max_edge=96, batch_size=2)
    assert described.shape == (3, net.dimension)
    with torch.no_grad():
        alone = net(torch.from_numpy(images[1]).permute(2, 0, 1)[None].float() / 255.0).descriptor[0].numpy()
    np.testing.assert_allclose(described[1], alone, atol=1e-5)
