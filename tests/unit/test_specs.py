"""Model specs: the release's tags for the paper's models and readable ones for others."""
from lgip.models import PAPER_MODELS, parse_spec


def test_paper_model_tags_are_the_releases():
    assert [parse_spec(spec).tag for spec in PAPER_MODELS][::4] == [
        "openclip_ViT-B-16_openai", "openclip_EVA02-L-14_merged2b_s4b_b131k", "siglip2_google_siglip2-base-patch16-224"]
    assert parse_spec("openclip:ViT-B-32@laion2b_s34b_b79k").tag == "openclip_ViT-B-32_laion2b_s34b_b79k"
    assert parse_spec("hf:google/siglip-so400m-patch14-384").tag == "siglip_google_siglip-so400m-patch14-384"
