"""The HQ-JEPA networks: hybrid Mamba-ViT encoder, predictor, cross-modal fusion, the selective scan,
and the full model with its objective (`models.hqjepa.HQJEPA`)."""
